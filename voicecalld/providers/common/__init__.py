"""
What every carrier's provider shares: the webhook pipeline and its verifier
and dialect interfaces, the replay cache, REST over treq, and the
say/listen/hold document flow.  A carrier's package adds only its wire format.
"""
