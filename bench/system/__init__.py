"""
The system benchmark: the real C{twistd -n voicecalld} process under N streamed calls on
Twilio, Telnyx and Plivo, against a load generator and vendor fakes, measured from outside
(C{python -m bench.system}, L{bench.system.runner}).
"""
