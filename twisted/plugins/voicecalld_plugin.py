"""twistd dropin: names the voicecalld service maker and nothing else."""

from twisted.application.service import ServiceMaker

voicecalld = ServiceMaker(
    "voicecalld",
    "voicecalld.tap",
    "Phone-call daemon for AI agents (Twilio, Telnyx, Plivo, mock)",
    "voicecalld",
)
