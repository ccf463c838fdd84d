"""The request checks of the OpenAI-compatible server: any JSON object is either a request npqwen
can run or an ApiError (a 400 or 404 naming the field), never another exception."""

from hypothesis import given, settings, strategies as st

from npqwen.openai_api import CHAT_FIELDS, COMPLETION_FIELDS, ApiError, Generation, parse

CTX = {"model_ids": ["demo"], "vocab_size": 4003, "can_think": True}
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=False),
                    st.text(max_size=6), st.sampled_from(["text", "none", "auto", "medium", "user", "demo", "0"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["type", "role", "content", "text", "include_usage", "name", "x"]), inner,
                    max_size=3)), max_leaves=8)
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool", "x"]),
                                 "content": st.one_of(st.text(max_size=5), values)})


@settings(max_examples=400, deadline=None)
@given(st.booleans(), st.data())
def test_any_body_is_a_request_or_an_api_error(chat, data):
    fields = sorted(CHAT_FIELDS if chat else COMPLETION_FIELDS) + ["frobnicate"]
    body = data.draw(st.dictionaries(st.sampled_from(fields), values, max_size=5))
    if data.draw(st.booleans()):   # most bodies carry the required field in a usable form
        body["messages" if chat else "prompt"] = (data.draw(st.lists(message, min_size=1, max_size=3)) if chat
                                                  else data.draw(st.text(min_size=1, max_size=8)))
    try:
        g = parse(body, chat, CTX)
    except ApiError as e:
        assert e.status in (400, 404) and e.message and e.body()["error"]["type"] == "invalid_request_error"
        assert e.param is None or e.param.split(".")[0].split("[")[0] in set(body) | {"messages", "prompt"}
        return
    assert isinstance(g, Generation) and (g.messages if chat else g.prompt)
    assert set(body) <= set(CHAT_FIELDS if chat else COMPLETION_FIELDS)


def test_values_that_used_to_break():
    body = {"messages": [{"role": "user", "content": "hi"}]}
    for extra in ({"logit_bias": {"9" * 5000: 1}}, {"temperature": 10**400}, {"max_tokens": True},
                  {"stop": ["a"] * 17}, {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
                  {"modalities": [["text"]]}):
        try:
            parse({**body, **extra}, True, CTX)
            raise AssertionError(f"accepted {extra}")
        except ApiError as e:
            assert e.status == 400 and e.param.split(".")[0].split("[")[0] in extra
