"""Kubernetes' ``$(VAR)`` expansion, and the mount-path rewriting rule.

Path rewriting: a local process cannot see a volume at its absolute ``mountPath``
(that needs a mount namespace), so each volume is a directory under the node's
state directory and every *path token* that names a mount path is rewritten to
that directory. A path token is an occurrence of the mount path that

* starts the text, or follows whitespace or one of ``= : ' " ( ,``; and
* ends the text, or is followed by ``/``, whitespace or one of ``' " : ; ) ,``.

So ``/data``, ``/data/nodes.conf``, ``--dir=/data``, ``PATH=/opt/bin:/data`` and
``sh -c 'cat /etc/conf/redis.conf'`` are rewritten, while ``/database`` and
``http://host/data`` are not. The longest mount path wins, the text is scanned
once (a rewritten path is never rewritten again), and a sub-path mount maps to
the sub-path inside its volume's directory. The rule applies to the command,
the arguments, env values, exec probe commands, the working directory and the
redis.conf a redis-server is started with.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

_OPERATOR = "$"


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Expand ``$(NAME)`` the way the kubelet does (k8s.io/kubernetes
    third_party/forked/golang/expansion): ``$$`` is a literal ``$``; ``$(NAME)`` is
    NAME's value, or stays ``$(NAME)`` when NAME is undefined; any other ``$`` stays."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == _OPERATOR and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            if following == _OPERATOR:
                out.append(_OPERATOR)
                advance = 1
            elif following == "(":
                closer = text.find(")", cursor + 2)
                if closer == -1:
                    out.append("$(")
                    advance = 1
                else:
                    name = text[cursor + 2 : closer]
                    value = lookup(name)
                    out.append(f"$({name})" if value is None else value)
                    advance = closer - cursor
            else:
                out.append(_OPERATOR + following)
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def expand_with(text: str, variables: Mapping[str, str]) -> str:
    return expand(text, variables.get)


_BEFORE = r"\s=:'\"(,"
_AFTER = r"/\s'\":;),"


class PathRewriter:
    """Rewrites mount paths to the local directories that stand in for them."""

    def __init__(self, mounts: Iterable[tuple[str, str]]) -> None:
        table: dict[str, str] = {}
        for mount_path, local in mounts:
            normalised = mount_path.rstrip("/")
            # "/" cannot be stood in for: rewriting it would rewrite every path.
            if normalised.startswith("/"):
                table[normalised] = local.rstrip("/") or "/"
        self._table = table
        if table:
            alternatives = "|".join(re.escape(p) for p in sorted(table, key=len, reverse=True))
            self._pattern: re.Pattern[str] | None = re.compile(
                rf"(?<![^{_BEFORE}])(?:{alternatives})(?![^{_AFTER}])"
            )
        else:
            self._pattern = None

    @property
    def mounts(self) -> Mapping[str, str]:
        return dict(self._table)

    def rewrite(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda match: self._table[match.group(0)], text)

    def local_path(self, path: str) -> str | None:
        """The local stand-in for an absolute in-container path, or None when no
        mount covers it."""
        best = None
        for mount_path in self._table:
            if (path == mount_path or path.startswith(mount_path + "/")) and (
                best is None or len(mount_path) > len(best)
            ):
                best = mount_path
        if best is None:
            return None
        return self._table[best] + path[len(best) :]
