"""One provider contract: the same scenarios run through every carrier's fake."""
