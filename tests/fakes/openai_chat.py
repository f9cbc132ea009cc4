"""A fake OpenAI-compatible chat-completions endpoint (a twisted.web resource)."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from twisted.internet.defer import Deferred
from twisted.web import resource
from twisted.web.server import NOT_DONE_YET


class FakeChat(resource.Resource):
    """
    Serves C{POST /v1/chat/completions}: answers with the queued replies (or
    C{default}), records each request, and can fail or hold an answer.
    """

    isLeaf = True

    def __init__(self, default: str = "Sure, I can help with that.") -> None:
        super().__init__()
        self.default = default
        self.replies: deque[str] = deque()
        self.requests: list[dict[str, Any]] = []
        self.fail_with: tuple[int, str] | None = None
        self.hold: Deferred | None = None

    def render_POST(self, request):
        if not request.path.endswith(b"/chat/completions"):
            request.setResponseCode(404)
            return b"{}"
        body = json.loads(request.content.read())
        self.requests.append({"body": body, "authorization": request.getHeader(b"authorization")})
        if self.fail_with is not None:
            code, message = self.fail_with
            request.setResponseCode(code)
            return json.dumps({"error": {"message": message}}).encode()
        text = self.replies.popleft() if self.replies else self.default
        answer = json.dumps(
            {"choices": [{"message": {"role": "assistant", "content": text}}]}
        ).encode()
        if self.hold is None:
            return answer

        def release(_: object) -> None:
            request.write(answer)
            request.finish()

        self.hold.addCallback(release)
        return NOT_DONE_YET
