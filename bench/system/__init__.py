"""
The system benchmark: the real C{twistd -n voicecalld} process under N streamed calls on
Twilio, Telnyx and Plivo, measured from outside (C{python -m bench.system}, L{runner}).
"""
