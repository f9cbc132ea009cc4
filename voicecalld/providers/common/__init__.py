"""
What every carrier's provider shares, so that a carrier's own package holds
only its wire format.

- C{webhook.py}: the webhook pipeline (L{WebhookResource}) and the
  L{IWebhookDialect} a carrier plugs into it;
- C{verify.py}: the L{IWebhookVerifier} interface, and L{UrlSignatureVerifier}
  for carriers that sign the URL they requested;
- C{replay.py}: the answers remembered for retried webhooks;
- C{rest.py}: REST over treq (L{RestClient}) and its one L{RestError}.

The media side is carrier-neutral too: L{voicecalld.media.stream} (the
socket, and the L{IStreamCodec} a carrier provides) and
L{voicecalld.media.session} (the per-call media sessions).

Adding a carrier: write its L{IWebhookVerifier} (its signature over what
L{SignedRequest} holds), its L{IWebhookDialect} (parse the body, and read
each webhook into a L{Reading}: the call events to apply in order, then the
answer document, or the accept/refuse answers of a new inbound call), its
L{IStreamCodec} (inbound JSON into L{StreamStart}/L{StreamMedia}/...; an
encoder for outbound media, marks and clears), and its REST paths and error
parser over L{RestClient}.  Its provider then builds one
L{MediaSessions} with the codec and one L{WebhookResource} with the verifier
and dialect, and answers the L{IProvider} methods with REST calls.
"""
