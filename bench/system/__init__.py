"""The system benchmark: the real daemon process against a load generator and vendor fakes."""
