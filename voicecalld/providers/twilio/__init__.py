"""Twilio Programmable Voice: REST, signed webhooks, TwiML and Media Streams."""
