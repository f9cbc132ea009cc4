"""The names of the two tools every realtime call offers its model."""

END_CALL_TOOL = "openclaw_end_call"
CONSULT_TOOL = "openclaw_agent_consult"

# The tool-call id prefix of a consult the host asks itself on the caller's
# words (C{realtime.consultPolicy: always}); its answer goes to the realtime
# bridge, which has the model say it, never to the vendor as a function result.
HOST_CONSULT_PREFIX = "host-consult-"
