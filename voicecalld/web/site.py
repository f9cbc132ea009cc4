"""The HTTP resource tree: provider webhooks and media-stream WebSockets on one port."""

from __future__ import annotations

from collections.abc import Mapping

from twisted.web import pages, resource


class ExactPath(resource.Resource):
    """
    Serves C{inner} at exactly its mount path (one trailing slash allowed), so
    look-alikes such as C{/voice/webhook-evil} or C{/voice/webhook/x} get 404.
    """

    isLeaf = True

    def __init__(self, inner: resource.IResource) -> None:
        super().__init__()
        self._inner = inner

    def render(self, request):
        if request.postpath not in ([], [b""]):
            return pages.notFound().render(request)
        return self._inner.render(request)


class _Folder(resource.Resource):
    """A path segment with children; anything else below it is a plain 404."""

    def getChild(self, path, request):
        return pages.notFound()

    def render(self, request):
        return pages.notFound().render(request)


def build_root(mounts: Mapping[str, resource.IResource]) -> resource.Resource:
    """A root resource serving each resource at its path (others get 404)."""
    root = _Folder()
    for path, inner in mounts.items():
        segments = [s.encode() for s in path.strip("/").split("/")]
        node = root
        for segment in segments[:-1]:
            child = node.children.get(segment)
            if child is None:
                child = _Folder()
                node.putChild(segment, child)
            node = child
        node.putChild(segments[-1], ExactPath(inner))
    return root
