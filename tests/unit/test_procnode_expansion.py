"""Kubernetes $(VAR) expansion and the mount-path rewriting rule."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from swarmops.testbed.procnode.expansion import PathRewriter, expand_with

NAMES = st.from_regex(r"[A-Z_][A-Z0-9_]{0,6}", fullmatch=True)
TEXT = st.text(alphabet=st.sampled_from(list("ab$()_XY /=")), max_size=30)


class TestExpand:
    def test_defined_variables_are_substituted(self) -> None:
        assert expand_with(
            "--bind $(POD_IP) --port $(PORT)", {"POD_IP": "1.2.3.4", "PORT": "7"}
        ) == ("--bind 1.2.3.4 --port 7")

    def test_undefined_variables_stay_as_written(self) -> None:
        assert expand_with("$(MISSING)/x", {}) == "$(MISSING)/x"

    def test_double_dollar_escapes(self) -> None:
        assert expand_with("$$(POD_IP)", {"POD_IP": "x"}) == "$(POD_IP)"
        assert expand_with("cost: $$5", {}) == "cost: $5"

    def test_lone_and_unclosed_dollars_stay(self) -> None:
        assert expand_with("a$b", {}) == "a$b"
        assert expand_with("end$", {}) == "end$"
        assert expand_with("$(OPEN", {"OPEN": "x"}) == "$(OPEN"

    def test_shell_variables_are_not_kubernetes_variables(self) -> None:
        assert expand_with("echo ${HOME} $HOME", {"HOME": "/x"}) == "echo ${HOME} $HOME"

    def test_values_are_not_expanded_again(self) -> None:
        assert expand_with("$(A)", {"A": "$(B)", "B": "no"}) == "$(B)"

    @given(TEXT, st.dictionaries(NAMES, st.text(max_size=5)))
    def test_escaping_every_dollar_round_trips(self, text: str, variables: dict[str, str]) -> None:
        assert expand_with(text.replace("$", "$$"), variables) == text

    @given(st.text(alphabet=st.characters(blacklist_characters="$"), max_size=40))
    def test_text_without_dollars_is_unchanged(self, text: str) -> None:
        assert expand_with(text, {"A": "b"}) == text

    @given(NAMES, st.text(max_size=10), st.text(alphabet="abc /", max_size=10))
    def test_reference_is_replaced_by_value(self, name: str, value: str, around: str) -> None:
        assert expand_with(f"{around}$({name}){around}", {name: value}) == around + value + around


class TestPathRewriter:
    rewriter = PathRewriter([("/data", "/state/vol/data"), ("/etc/redis", "/state/vol/conf")])

    def test_whole_paths_and_paths_below_are_rewritten(self) -> None:
        assert self.rewriter.rewrite("/data") == "/state/vol/data"
        assert self.rewriter.rewrite("/data/") == "/state/vol/data/"
        assert self.rewriter.rewrite("/etc/redis/redis.conf") == "/state/vol/conf/redis.conf"

    def test_flag_values_and_lists_are_rewritten(self) -> None:
        assert self.rewriter.rewrite("--dir=/data") == "--dir=/state/vol/data"
        assert self.rewriter.rewrite("PATH=/bin:/data/bin") == "PATH=/bin:/state/vol/data/bin"

    def test_paths_inside_scripts_are_rewritten(self) -> None:
        script = "cp '/etc/redis/redis.conf' /data; exec redis-server \"/data/r.conf\""
        assert self.rewriter.rewrite(script) == (
            "cp '/state/vol/conf/redis.conf' /state/vol/data; "
            'exec redis-server "/state/vol/data/r.conf"'
        )

    def test_lookalikes_are_left_alone(self) -> None:
        for text in ("/database", "/data.bak", "http://host/data", "x/data", "/etc/redis.conf"):
            assert self.rewriter.rewrite(text) == text

    def test_the_longest_mount_wins(self) -> None:
        nested = PathRewriter([("/var", "/L/var"), ("/var/lib/data", "/L/data")])
        assert nested.rewrite("/var/lib/data/x /var/log") == "/L/data/x /L/var/log"

    def test_rewritten_paths_are_not_rewritten_again(self) -> None:
        # The local directory itself starts with a mount path.
        tricky = PathRewriter([("/tmp", "/tmp/state/vol/tmp")])
        assert tricky.rewrite("/tmp/x") == "/tmp/state/vol/tmp/x"

    def test_root_and_relative_mounts_are_ignored(self) -> None:
        assert PathRewriter([("/", "/L"), ("rel", "/R")]).rewrite("/x rel") == "/x rel"

    def test_local_path(self) -> None:
        assert self.rewriter.local_path("/data/nodes.conf") == "/state/vol/data/nodes.conf"
        assert self.rewriter.local_path("/data") == "/state/vol/data"
        assert self.rewriter.local_path("/database") is None

    @given(st.text(alphabet=st.characters(blacklist_characters="/"), max_size=30))
    def test_text_without_slashes_is_unchanged(self, text: str) -> None:
        assert self.rewriter.rewrite(text) == text

    @given(
        st.from_regex(r"(/[a-z]{1,5}){1,3}", fullmatch=True),
        st.from_regex(r"(/[a-z0-9.]{1,6}){0,3}", fullmatch=True),
        st.sampled_from(["", " ", "=", ":", "'", '"', "(", ","]),
    )
    def test_a_mount_path_token_always_maps_into_its_directory(
        self, mount: str, below: str, before: str
    ) -> None:
        rewriter = PathRewriter([(mount, "/LOCAL")])
        assert rewriter.rewrite(f"{before}{mount}{below}") == f"{before}/LOCAL{below}"

    @given(st.text(max_size=40))
    def test_rewriting_only_touches_mount_path_occurrences(self, text: str) -> None:
        rewritten = self.rewriter.rewrite(text)
        if "/data" not in text and "/etc/redis" not in text:
            assert rewritten == text
        assert re.sub("/state/vol/(data|conf)", "", rewritten).count("/") <= text.count("/")
