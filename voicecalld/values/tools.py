"""The names of the two tools every realtime call offers its model."""

END_CALL_TOOL = "openclaw_end_call"
CONSULT_TOOL = "openclaw_agent_consult"
