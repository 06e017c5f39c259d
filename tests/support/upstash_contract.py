"""The reference's documented REST examples (vercel-kv.md §B6, TL;DR 12, §B7), as tests any
Upstash-REST fake must pass. Subclass `UpstashContract` as `Test...` in a module that provides a
`shim` fixture (an `UpstashRestServer` already serving at `shim.url`): tests/test_kv_shims.py
runs it over fakeredis, tests/redis/test_shim_protocol.py over a real redis-server."""

from __future__ import annotations

import base64
from typing import Any

import requests

from tests.support.upstash_rest import UpstashRestServer

WRONG_TYPE = "ERR value is not an integer or out of range"


def call(
    shim: UpstashRestServer,
    body: Any = None,
    *,
    path: str = "",
    method: str = "POST",
    token: str | None = "shim",
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> requests.Response:
    """One HTTP request to the shim; `token="shim"` sends its Bearer token, None sends none."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {shim.token if token == 'shim' else token}"
    return requests.request(
        method, shim.url + path, json=body, data=data, headers=sent, timeout=(3, 10)
    )


def result(shim: UpstashRestServer, *command: Any) -> Any:
    response = call(shim, list(command))
    assert response.status_code == 200, response.text
    return response.json()["result"]


class UpstashContract:
    # ---- body form, reply shapes ---------------------------------------------------------
    def test_set_nx_px_is_ok_then_null(self, shim: UpstashRestServer) -> None:
        first = call(shim, ["SET", "lock", "a", "NX", "PX", 30000])
        second = call(shim, ["SET", "lock", "b", "NX", "PX", 30000])
        assert (first.status_code, first.json()) == (200, {"result": "OK"})
        assert (second.status_code, second.json()) == (200, {"result": None})
        assert 0 < result(shim, "PTTL", "lock") <= 30000

    def test_ping_answers_pong(self, shim: UpstashRestServer) -> None:
        assert call(shim, ["PING"]).json() == {"result": "PONG"}
        assert result(shim, "ECHO", "hi") == "hi"

    def test_expire_commands_answer_integers_not_ok(self, shim: UpstashRestServer) -> None:
        result(shim, "SET", "k", "v")
        assert result(shim, "PEXPIRE", "k", 60000) == 1
        assert result(shim, "EXPIRE", "k", 60) == 1
        assert result(shim, "EXPIRE", "missing", 60) == 0
        assert result(shim, "PEXPIRE", "missing", 60000) == 0

    def test_hgetall_is_a_flat_array(self, shim: UpstashRestServer) -> None:
        assert result(shim, "HSET", "h", "a", "1", "b", "2") == 2
        flat = result(shim, "HGETALL", "h")
        assert isinstance(flat, list) and dict(zip(flat[::2], flat[1::2], strict=True)) == {
            "a": "1",
            "b": "2",
        }
        assert result(shim, "HMGET", "h", "a", "zz") == ["1", None]

    def test_getdel_set_get_and_number_shapes(self, shim: UpstashRestServer) -> None:
        result(shim, "SET", "k", "old")
        assert result(shim, "SET", "k", "new", "GET") == "old"
        assert result(shim, "GETDEL", "k") == "new"
        assert result(shim, "GETDEL", "k") is None
        assert result(shim, "INCR", "n") == 1
        assert result(shim, "INCRBYFLOAT", "f", "1.5") == "1.5"  # float-like replies: strings
        assert result(shim, "DEL", "n", "f") == 2

    def test_eval_compare_and_delete_answers_1_or_0(self, shim: UpstashRestServer) -> None:
        script = (
            "if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('del', KEYS[1]) else return 0 end"
        )
        result(shim, "SET", "lock", "owner")
        assert result(shim, "EVAL", script, 1, "lock", "stranger") == 0
        assert result(shim, "EVAL", script, 1, "lock", "owner") == 1

    # ---- errors ---------------------------------------------------------------------------
    def test_command_errors_are_400_with_the_redis_message(self, shim: UpstashRestServer) -> None:
        result(shim, "SET", "s", "text")
        incr = call(shim, ["INCR", "s"])
        arity = call(shim, ["GET"])
        noscript = call(shim, ["EVALSHA", "0" * 40, 0])
        assert (incr.status_code, incr.json()) == (400, {"error": WRONG_TYPE})
        assert arity.status_code == 400
        assert arity.json()["error"].startswith("ERR wrong number of arguments for 'get'")
        assert noscript.status_code == 400 and noscript.json()["error"].startswith("NOSCRIPT")

    def test_unsupported_commands_are_400(self, shim: UpstashRestServer) -> None:
        for command in (["BLPOP", "q", 1], ["WATCH", "k"], ["SELECT", 1]):
            answer = call(shim, command)
            assert answer.status_code == 400 and "error" in answer.json(), command

    def test_bad_or_missing_token_is_401(self, shim: UpstashRestServer) -> None:
        for token in ("wrong", None):
            answer = call(shim, ["PING"], token=token)
            assert answer.status_code == 401
            assert answer.json() == {"error": "WRONGPASS invalid or missing auth token"}

    def test_token_as_a_query_parameter_is_accepted(self, shim: UpstashRestServer) -> None:
        answer = call(shim, ["PING"], path=f"/?_token={shim.token}", token=None)
        assert (answer.status_code, answer.json()) == (200, {"result": "PONG"})
        assert call(shim, ["PING"], path="/?_token=wrong", token=None).status_code == 401

    def test_405_only_for_methods_other_than_head_get_post_put(
        self, shim: UpstashRestServer
    ) -> None:
        for method in ("DELETE", "PATCH", "OPTIONS"):
            assert call(shim, ["PING"], method=method).status_code == 405, method
        assert call(shim, ["SET", "k", "v"], method="PUT").json() == {"result": "OK"}
        assert call(shim, method="GET", path="/get/k").json() == {"result": "v"}
        assert call(shim, method="HEAD", path="/get/k").status_code == 200

    # ---- path form --------------------------------------------------------------------------
    def test_path_form_commands(self, shim: UpstashRestServer) -> None:
        assert call(shim, method="GET", path="/set/foo/bar").json() == {"result": "OK"}
        assert call(shim, method="GET", path="/get/foo").json() == {"result": "bar"}
        assert call(shim, path="/set/foo/bar/EX/100").json() == {"result": "OK"}
        assert 0 < result(shim, "TTL", "foo") <= 100
        # POST /set/key: the body is the value, later arguments come from the query string.
        posted = call(shim, path="/set/a%2Fb?EX=100", data=b"v/with?odd chars")
        assert posted.json() == {"result": "OK"}
        assert result(shim, "GET", "a/b") == "v/with?odd chars"
        assert 0 < result(shim, "TTL", "a/b") <= 100
        tokened = call(shim, method="GET", path=f"/get/foo?_token={shim.token}", token=None)
        assert tokened.json() == {"result": "bar"}
        assert call(shim, method="GET", path="/incr/foo").status_code == 400

    # ---- pipeline and transaction --------------------------------------------------------
    def test_pipeline_answers_each_command_in_order(self, shim: UpstashRestServer) -> None:
        answer = call(shim, [["SET", "k1", "v"], ["INCR", "k1"], ["GET", "k1"]], path="/pipeline")
        assert answer.status_code == 200
        assert answer.json() == [{"result": "OK"}, {"error": WRONG_TYPE}, {"result": "v"}]

    def test_multi_exec_runs_atomically_with_per_command_errors(
        self, shim: UpstashRestServer
    ) -> None:
        answer = call(shim, [["SET", "t", "1"], ["INCR", "t"], ["LPOP", "t"]], path="/multi-exec")
        assert answer.status_code == 200
        body = answer.json()
        assert body[:2] == [{"result": "OK"}, {"result": 2}]
        assert body[2]["error"].startswith("WRONGTYPE")

    def test_a_discarded_transaction_is_one_error_object(self, shim: UpstashRestServer) -> None:
        syntax = call(shim, [["SET", "d", "1"], ["SET", "d"]], path="/multi-exec")
        watch = call(shim, [["WATCH", "d"], ["SET", "d", "1"]], path="/multi-exec")
        for answer in (syntax, watch):
            assert answer.status_code == 400, answer.text
            assert isinstance(answer.json(), dict) and "error" in answer.json(), answer.text
        assert result(shim, "EXISTS", "d") == 0  # nothing of either block ran

    # ---- encodings and headers -------------------------------------------------------------
    def test_base64_encodes_every_string_but_ok(self, shim: UpstashRestServer) -> None:
        b64 = {"Upstash-Encoding": "base64"}
        assert call(shim, ["SET", "foo", "bar"], headers=b64).json() == {"result": "OK"}
        assert call(shim, ["GET", "foo"], headers=b64).json() == {"result": "YmFy"}
        assert call(shim, ["STRLEN", "foo"], headers=b64).json() == {"result": 3}
        listed = call(shim, ["MGET", "foo", "none"], headers=b64).json()["result"]
        assert listed == [base64.b64encode(b"bar").decode(), None]

    def test_resp2_format_answers_raw_resp(self, shim: UpstashRestServer) -> None:
        resp2 = {"Upstash-Response-Format": "resp2"}
        assert call(shim, ["SET", "foo", "bar"], headers=resp2).content == b"+OK\r\n"
        assert call(shim, ["GET", "foo"], headers=resp2).content == b"$3\r\nbar\r\n"
        assert call(shim, ["GET", "none"], headers=resp2).content == b"$-1\r\n"
        both = {**resp2, "Upstash-Encoding": "base64"}
        assert call(shim, ["GET", "foo"], headers=both).status_code == 400

    def test_every_answer_carries_a_growing_sync_token(self, shim: UpstashRestServer) -> None:
        first = call(shim, ["SET", "k", "v"]).headers["Upstash-Sync-Token"]
        echoed = call(shim, ["GET", "k"], headers={"Upstash-Sync-Token": first})
        second = echoed.headers["Upstash-Sync-Token"]
        assert first and second and first != second
        assert shim.sync_tokens_seen[-1] == first
