"""`python -m npqwen.serve --model DIR_OR_ID [--host 127.0.0.1] [--port 8000]`: an OpenAI-compatible
HTTP server, for the chat UIs, editor plugins and `openai` scripts that already speak that API.

    GET  /health                 {"status": "ok"}
    GET  /v1/models              the one model served, named as --model names it
    POST /v1/completions         a prompt (text or token ids) continued
    POST /v1/chat/completions    messages rendered with the checkpoint's chat template, answered

Streaming is server-sent events in OpenAI's chunk format, ending with `data: [DONE]`; the chunks'
text joined is exactly the text of the same request not streamed. Requests are decoded together
by one engine thread (batching.py: continuous batching, a prompt cache for follow-up turns); the
request fields are checked by openai_api.py. Starlette and uvicorn do the HTTP
(`pip install -e ".[serve]"`). Loopback by default: another --host is said on stderr.
"""

import asyncio
import ipaddress
import json
import os
import socket
import sys
import threading

from .batching import Engine, Request
from .cli import DEMO_MODEL, _printable, _settings, check_speculative_options, speculative_drafter
from .config import ModelConfig
from .errors import NpqwenError
from .generation import context_limit
from .generation_config import eos_token_ids, read_generation_config
from .hub import add_revision_option, resolve_model
from .model import add_weights_option, load_model
from .openai_api import ApiError, chunk, new_id, now, parse, response, several_prompts
from .tokenizer import Tokenizer
from .replies import THINK, ReplySplitter, join, reasoning_open, tool_format

MAX_BODY = 16 << 20     # bytes of request JSON: far more than a context holds (about 4 bytes a token)
MAX_QUEUE = 256         # requests waiting for a place in the batch; past that: 503, try again


class Service:
    """The model, its tokenizer and its defaults, and the engine that decodes for every client."""

    def __init__(self, model, tokenizer, model_id, gen_cfg, max_batch=8, prompt_cache_mb=1024, folder=None,
                 drafter=None):
        self.model, self.tok, self.model_id, self.gen_cfg = model, tokenizer, model_id, gen_cfg
        self.folder = folder or tokenizer.folder     # where preprocessor_config.json is, for images
        self.processor = None
        self.cfg = model.config
        self.limit = context_limit(self.cfg)
        self.created = now()
        self.engine = Engine(model, tokenizer, eos_token_ids(self.cfg, gen_cfg), max_batch,
                             int(prompt_cache_mb * (1 << 20)), after_step=self._hand_on, drafter=drafter)
        # The engine's events of one step reach the event loop together: one wake-up per step, not per
        # request (each wake-up makes the engine thread hand over the GIL).
        self.loop, self.outbox, self.lock = None, [], threading.Lock()
        self.ctx = {"model_ids": [model_id], "vocab_size": self.cfg.vocab_size, "can_think": tokenizer.can_think,
                    "tool_format": tool_format(tokenizer.chat_template)}
        self.thinks = tokenizer.token_id(THINK) is not None   # a reply may hold a <think> block

    def close(self):
        self.engine.close()

    def _post(self, events, event):     # engine thread
        with self.lock:
            self.outbox.append((events, event))

    def _hand_on(self):                 # engine thread, after each step
        with self.lock:
            if not self.outbox or self.loop is None:
                return
            batch, self.outbox = self.outbox, []
        try:
            self.loop.call_soon_threadsafe(lambda: [events.put_nowait(e) for events, e in batch])
        except RuntimeError:            # the event loop has closed: the server is stopping
            pass

    # -- requests

    async def completions(self, request):
        body = await _json_body(request)
        prompts = several_prompts(body.get("prompt"))
        if prompts is None:
            return await self._answer(request, chat=False, body=body)
        if body.get("stream"):
            raise ApiError("'prompt': several prompts are answered only when not streamed", "prompt",
                           code="unsupported_parameter")
        if len(prompts) > MAX_QUEUE:
            raise ApiError(f"'prompt': at most {MAX_QUEUE} prompts in one request, found {len(prompts)}", "prompt")

        async def one(k, p):
            try:
                return json.loads((await self._answer(request, False, dict(body, prompt=p))).body)
            except ApiError as e:   # named by its place in the array
                if e.param == "prompt":
                    e.param = f"prompt[{k}]"
                    e.message = e.message.replace("'prompt'", f"'prompt[{k}]'")
                raise
        answers = await asyncio.gather(*[one(k, p) for k, p in enumerate(prompts)])
        whole = dict(answers[0], choices=[dict(a["choices"][0], index=k) for k, a in enumerate(answers)])
        whole["usage"] = {key: sum(a["usage"][key] for a in answers)
                          for key in ("prompt_tokens", "completion_tokens", "total_tokens")}
        whole["usage"]["prompt_tokens_details"] = {"cached_tokens": sum(
            a["usage"].get("prompt_tokens_details", {}).get("cached_tokens", 0) for a in answers)}
        return _json(whole)

    async def chat_completions(self, request):
        return await self._answer(request, chat=True)

    async def _answer(self, request, chat, body=None):
        g = parse(body if body is not None else await _json_body(request), chat, self.ctx)
        from starlette.concurrency import run_in_threadpool
        ids, images = await run_in_threadpool(self._encode_with_images, g)
        if len(ids) > self.limit or (len(ids) == self.limit and g.max_tokens != 0):
            raise ApiError(f"the prompt is {len(ids)} tokens long; the model's context is {self.limit} tokens, "
                           f"leaving no room to generate", "messages" if chat else "prompt",
                           code="context_length_exceeded")
        if self.engine.queued() >= MAX_QUEUE:
            raise ApiError(f"the server is busy: {MAX_QUEUE} requests are waiting; try again later", status=503)
        try:
            settings = _settings(g.sampling, self.gen_cfg)
        except NpqwenError as e:
            raise ApiError(str(e)) from None
        forced = g.tool_choice == "required" or isinstance(g.tool_choice, tuple)
        constraint = await run_in_threadpool(self._constraint, g) if g.response_format or forced else None
        max_new = g.max_tokens if g.max_tokens is not None else (self.gen_cfg.max_new_tokens or self.limit - len(ids))
        self.loop, events = asyncio.get_running_loop(), asyncio.Queue()
        req = Request(ids, max_new, settings, lambda e: self._post(events, e), seed=g.seed, stop=g.stop,
                      logit_bias=g.logit_bias, logprobs=g.logprobs, images=images, constraint=constraint,
                      prompt_logprobs=g.logprobs if g.echo else None)   # echo with logprobs: the prompt's too
        self.engine.submit(req)
        gone = asyncio.ensure_future(_disconnected(request))
        streaming = False
        try:
            first = await _next(events, gone)   # the prompt prefilled, the first token chosen (or an error)
            if first is None:
                return _client_gone()
            if first.error:
                raise ApiError(first.error, status=first.status)
            rid, head = new_id(chat), (self.tok.decode(ids) if g.echo else "")
            split = self._splitter(g, ids) if chat else None
            if g.stream:
                streaming = True
                return _event_stream(self._chunks(g, rid, req, events, first, gone, head, split))
            return await self._whole(g, rid, events, first, gone, head, split)
        finally:
            if not streaming:
                req.cancelled = True    # (a finished request has left the batch already)
                gone.cancel()

    def _encode_with_images(self, g):
        """-> the prompt's ids, with each image's placeholders expanded, and (pixel_values, image_grid_thw)
        or None: the user messages' images, in order, decoded and resized as the CLI's --image files."""
        found = [(i, j, p["data"]) for i, m in enumerate(g.messages or []) if isinstance(m["content"], list)
                 for j, p in enumerate(m["content"]) if p["type"] == "image"]
        if not found:
            return self._encode(g), None
        if self.model.vision is None:
            why = "its config.json has no vision_config" if self.cfg.vision is None else "its checkpoint has no " \
                                                                                      "vision tower weights"
            i, j, _ = found[0]
            raise ApiError(f"'messages[{i}].content[{j}]': this model reads text only ({why})",
                           f"messages[{i}].content[{j}]", code="unsupported_parameter")
        from .vision.images import load_image_processor, open_image
        from .vision.multimodal import expand_image_pads
        if self.processor is None:
            self.processor = load_image_processor(self.folder)
        pictures = []
        for i, j, data in found:
            where = f"messages[{i}].content[{j}]"
            try:
                pictures.append(open_image(where, data))
            except NpqwenError as e:
                raise ApiError(str(e), where) from None
        try:
            images = self.processor(pictures)
        except NpqwenError as e:
            raise ApiError(str(e), "messages") from None
        g.messages = [dict(m, content=[{"type": p["type"], **({"text": p["text"]} if p["type"] == "text" else {})}
                                       for p in m["content"]]) if isinstance(m["content"], list) else m
                      for m in g.messages]
        ids = self._encode(g)
        try:
            ids = expand_image_pads(ids, images[1], self.cfg.image_token_id, self.cfg.vision.spatial_merge_size)
        except NpqwenError as e:   # the chat template showed fewer (or more) images than the messages hold
            raise ApiError(f"{e} (does this model's chat template show images?)", "messages") from None
        return ids, images

    def _encode(self, g):
        if not g.chat and not isinstance(g.prompt, str):
            return g.prompt
        kwargs = {} if g.enable_thinking is None else {"enable_thinking": g.enable_thinking}
        if g.tools:
            kwargs["tools"] = g.tools   # rendered by the template, as sent
        try:
            ids = self.tok.encode_chat(g.messages, **kwargs) if g.chat else self.tok.encode(g.prompt)
        except NpqwenError as e:   # the template refused the conversation (roles out of order), a lone surrogate
            raise ApiError(str(e), "messages" if g.chat else "prompt") from None
        if not ids:
            raise ApiError("the chat template rendered these messages as an empty prompt", "messages")
        # (a tool result's name says which function answered: templates that do not show it lose nothing)
        named = [i for i, m in enumerate(g.messages or []) if "name" in m and m["role"] != "tool"] if g.chat else []
        if named:   # a participant's name counts only if the template shows it: else it would be dropped unsaid
            plain = [{k: v for k, v in m.items() if k != "name"} for m in g.messages]
            if self.tok.encode_chat(plain, **kwargs) == ids:
                at = f"messages[{named[0]}].name"
                raise ApiError(f"'{at}': this model's chat template does not show message names, so the name "
                               f"would be lost; leave it out (or put it in the content)", at,
                               code="unsupported_parameter")
        return ids

    def _constraint(self, g):
        """response_format json_object / json_schema, or tool_choice required / a named function -> the
        reply's grammar (structured.py)."""
        from .structured import Constraint, grammar_tokenizer, json_grammar, tool_call_grammar
        if g.response_format is None:   # a forced tool call
            kind, schema, where = None, None, "tools"
        else:
            kind, schema = g.response_format
            where = "response_format" if kind == "json_object" else "response_format.json_schema.schema"
        try:
            if kind is None:
                tools = {t["function"]["name"]: t["function"].get("parameters") for t in g.tools}
                grammar = tool_call_grammar(self.tok, tools, g.tool_choice[1] if isinstance(g.tool_choice, tuple)
                                            else None, self.ctx["tool_format"])
            else:
                grammar = json_grammar(schema)
            return Constraint(grammar_tokenizer(self.tok, self.cfg.vocab_size, self.engine.eos), grammar)
        except NpqwenError as e:
            raise ApiError(str(e), where) from None

    def _splitter(self, g, ids):
        """The reply's reasoning, content and tool calls (replies.py), as this template and request shape them."""
        tools = None
        if g.tools and g.tool_choice != "none":
            tools = {t["function"]["name"]: t["function"].get("parameters") or {} for t in g.tools}
        return ReplySplitter(reasoning=self.thinks, open_=self.thinks and reasoning_open(self.tok.decode(ids)),
                             tools=tools, fmt=self.ctx["tool_format"])

    async def _whole(self, g, rid, events, event, gone, text, split=None):
        pieces, tokens = [text], list(event.prompt or [])
        while True:
            if event.error:
                raise ApiError(event.error, status=event.status)
            pieces.append(event.text)
            if event.token is not None:
                tokens.append(event.token)
            if event.finish_reason:
                whole, reason, message = "".join(pieces), event.finish_reason, None
                if split is not None:
                    message, reason = join(split.feed(whole) + split.finish(), reason)
                return _json(response(g, rid, self.model_id, self.created, whole, reason, event.usage, tokens,
                                      tok=self.tok, message=message))
            event = await _next(events, gone)
            if event is None:
                return _client_gone()

    async def _chunks(self, g, rid, req, events, event, gone, head, split=None):
        """The server-sent events of one streamed answer. However it ends (finished, the client gone,
        the task cancelled), the request leaves the batch."""
        offset = 0    # where the next token's text starts in the whole text (its logprobs' text_offset)

        def made(tokens=(), **kw):
            nonlocal offset
            c = chunk(g, rid, self.model_id, self.created, tok=self.tok, tokens=tokens, offset=offset, **kw)
            offset += sum(len(t.text) for t in tokens)
            return c

        tokens = []   # generated since the last chunk: a token mid-character has no text of its own
        calls = []    # the tool calls streamed so far
        try:
            if g.chat or head:
                yield made(text=head, role=g.chat, tokens=event.prompt or ())
            while True:
                if event.error:
                    yield ApiError(event.error, status=event.status).body()
                    break
                if event.token is not None:
                    tokens.append(event.token)
                if split is not None:   # the reply's fields, as they complete
                    deltas = split.feed(event.text) + (split.finish() if event.finish_reason else [])
                    for d in deltas_of(deltas, calls):
                        yield made(delta=d, tokens=tokens)
                        tokens = []
                elif event.text:
                    yield made(text=event.text, tokens=tokens)
                    tokens = []
                if event.finish_reason:
                    reason = event.finish_reason
                    if split is not None and calls and reason == "stop":
                        reason = "tool_calls"
                    yield made(finish_reason=reason, tokens=tokens)
                    if g.include_usage:
                        yield made(usage=event.usage, last=True)
                    break
                event = await _next(events, gone)
                if event is None:
                    return
            yield "[DONE]"
        finally:
            req.cancelled = True
            gone.cancel()

    # -- the rest of the API

    async def models(self, request):
        return _json({"object": "list", "data": [self._model_object()]})

    async def model_info(self, request):
        if request.path_params["name"] != self.model_id:
            raise ApiError(f"The model '{request.path_params['name']}' does not exist", "model", status=404,
                           code="model_not_found")
        return _json(self._model_object())

    def _model_object(self):
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "npqwen",
                "max_model_len": self.limit}

    async def health(self, request):
        if self.engine.drafter is None:
            return _json({"status": "ok"})
        return _json({"status": "ok", "speculative": dict(self.engine.speculative)})  # rounds, drafted, accepted

    # -- the tokenizer, as vLLM serves it (lm-evaluation-harness's remote tokenizer reads these three)

    async def tokenizer_info(self, request):
        info = {k: v for k, v in self.tok.special_tokens.items()}
        return _json(dict(info, tokenizer_class=self.tok.config.get("tokenizer_class"),
                          chat_template=self.tok.chat_template if isinstance(self.tok.chat_template, str) else None,
                          model_max_length=self.limit, vocab_size=self.cfg.vocab_size))

    async def tokenize(self, request):
        """{"prompt": text} or {"messages": [...], "add_generation_prompt"?}; "add_special_tokens" accepted
        (Qwen's tokenizers add none) -> {"count", "max_model_len", "tokens"}."""
        body = await _json_body(request)
        known = {"model", "prompt", "messages", "add_special_tokens", "add_generation_prompt"}
        for k in body:
            if k not in known:
                raise ApiError(f"unknown field '{k}'", k, code="unknown_parameter")
        if body.get("model") is not None:
            parse({"model": body["model"], "prompt": "x"}, False, self.ctx)
        if ("prompt" in body) == ("messages" in body):
            raise ApiError("give 'prompt' (text) or 'messages', one of them", "prompt")
        if "prompt" in body:
            if not isinstance(body["prompt"], str):
                raise ApiError(f"'prompt' must be a string", "prompt")
            ids = self.tok.encode(body["prompt"])
        else:
            g = parse({"messages": body["messages"]}, True, self.ctx)
            try:
                ids = self.tok.encode_chat(g.messages, add_generation_prompt=body.get("add_generation_prompt", True)
                                           is not False)
            except NpqwenError as e:
                raise ApiError(str(e), "messages") from None
        return _json({"count": len(ids), "max_model_len": self.limit, "tokens": ids})

    async def detokenize(self, request):
        body = await _json_body(request)
        for k in body:
            if k not in ("model", "tokens"):
                raise ApiError(f"unknown field '{k}'", k, code="unknown_parameter")
        ids = body.get("tokens")
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ApiError("'tokens' must be an array of token ids", "tokens")
        bad = [i for i in ids if not 0 <= i < self.cfg.vocab_size]
        if bad:
            raise ApiError(f"'tokens' holds token id {bad[0]}, outside the vocabulary [0, {self.cfg.vocab_size})",
                           "tokens")
        return _json({"prompt": self.tok.decode(ids)})


def deltas_of(deltas, calls):
    """replies.ReplySplitter's deltas -> OpenAI's chat deltas. A tool call streams as OpenAI streams
    one: its index, id, type and name first, then its arguments (here in one piece). calls: the calls so
    far (their count gives the index), appended to."""
    for channel, x in deltas:
        if channel == "reasoning":
            yield {"reasoning_content": x, "reasoning": x}
        elif channel == "content":
            yield {"content": x}
        else:
            n = len(calls)
            calls.append(x)
            yield {"tool_calls": [{"index": n, "id": x["id"], "type": "function",
                                   "function": {"name": x["name"], "arguments": ""}}]}
            yield {"tool_calls": [{"index": n, "function": {"arguments": x["arguments"]}}]}


# ---------------------------------------------------------------------------------------------
# HTTP helpers


async def _json_body(request):
    """The request's JSON object, read up to MAX_BODY bytes; anything else is a 400 (or 413)."""
    raw = bytearray()
    async for part in request.stream():
        raw += part
        if len(raw) > MAX_BODY:
            raise ApiError(f"the request body is larger than {MAX_BODY >> 20} MB", status=413)
    try:
        body = json.loads(bytes(raw).decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as e:
        raise ApiError(f"the request body is not UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ApiError(f"the request body is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (ValueError, RecursionError) as e:   # NaN, an integer of thousands of digits, deep nesting
        raise ApiError(f"the request body is not usable JSON ({str(e)[:100]})") from None
    if not isinstance(body, dict):
        raise ApiError("the request body must be a JSON object")
    return body


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


async def _disconnected(request):
    """Returns when the client goes away (the body has been read: what remains is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _next(events, gone):
    """The engine's next event for this request, or None if the client went away first."""
    get = asyncio.ensure_future(events.get())
    await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
    if get.done():
        return get.result()
    get.cancel()
    return None


def _json(obj, status=200):
    from starlette.responses import Response
    return Response(json.dumps(obj, ensure_ascii=False), status, media_type="application/json")


def _client_gone():
    from starlette.responses import Response
    return Response(status_code=499)   # nobody reads it: the client has disconnected


def _event_stream(chunks):
    from starlette.responses import StreamingResponse

    async def sse():
        async for c in chunks:
            yield f"data: {c if isinstance(c, str) else json.dumps(c, ensure_ascii=False)}\n\n"
    return StreamingResponse(sse(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def create_app(service: Service):
    """The Starlette application: routes, and every error as OpenAI's error object (never a traceback)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    async def api_error(request, e):
        return _json(e.body(), e.status)

    async def http_error(request, e):  # unknown path, wrong method
        what = {404: f"no such endpoint: {request.method} {request.url.path}",
                405: f"{request.url.path} does not accept {request.method}"}.get(e.status_code, e.detail)
        return _json(ApiError(what, status=e.status_code, code={404: "not_found"}.get(e.status_code)).body(),
                     e.status_code)

    async def server_error(request, e):
        import traceback
        traceback.print_exception(e, file=sys.stderr)
        return _json(ApiError(f"internal error: {type(e).__name__}", status=500).body(), 500)

    routes = [Route("/health", service.health), Route("/v1/models", service.models),
              Route("/v1/models/{name:path}", service.model_info),
              Route("/v1/completions", service.completions, methods=["POST"]),
              Route("/v1/chat/completions", service.chat_completions, methods=["POST"]),
              Route("/tokenizer_info", service.tokenizer_info), Route("/tokenize", service.tokenize, methods=["POST"]),
              Route("/detokenize", service.detokenize, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={ApiError: api_error, HTTPException: http_error,
                                                        Exception: server_error})


# ---------------------------------------------------------------------------------------------
# the command line


def is_loopback(host) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host, port):
    """A listening socket, or one clear error (port in use, unknown host)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        raise NpqwenError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def _parser():
    from .cli import _Parser, add_speculative_options
    p = _Parser(prog="python -m npqwen.serve", description="An OpenAI-compatible HTTP server for a Qwen checkpoint: "
                "/v1/models, /v1/completions, /v1/chat/completions, /health.")
    p.add_argument("--model", default=DEMO_MODEL, help="checkpoint folder or hub id (default: the demo model)")
    add_revision_option(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free one; default 8000)")
    add_weights_option(p)
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together (default 8)")
    p.add_argument("--prompt-cache-mb", type=float, default=1024,
                   help="memory for the prompt cache of finished requests (0 = off; default 1024)")
    add_speculative_options(p)
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="uvicorn's logging (info: one line per request)")
    return p


def main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
        if not 0 <= args.port <= 65535:
            raise NpqwenError(f"--port must be from 0 to 65535, found {args.port}")
        if args.max_batch < 1:
            raise NpqwenError(f"--max-batch must be at least 1, found {args.max_batch}")
        if not args.prompt_cache_mb >= 0:
            raise NpqwenError(f"--prompt-cache-mb must be a number >= 0, found {args.prompt_cache_mb}")
        check_speculative_options(args)
        try:
            import uvicorn
            import starlette  # noqa: F401
        except ImportError:
            raise NpqwenError('the server needs the serve extra: pip install -e ".[serve]"') from None
        model_id = args.model
        folder = resolve_model(args.model, args.revision)
        if not os.path.isdir(folder):
            raise NpqwenError(f"--model {_printable(args.model)}: no such folder")
        tok = Tokenizer(folder)
        cfg = ModelConfig.from_file(folder)
        tok.check_fits(cfg.vocab_size)
        gen_cfg = read_generation_config(folder, cfg.vocab_size)
        sock = listen(args.host, args.port)   # before loading: a port in use should not wait for the weights
        drafter = speculative_drafter(args, tok, cfg)
        model = load_model(folder, weights=args.weights)
    except NpqwenError as e:
        print("error: " + "\n".join(_printable(line) for line in str(e).split("\n")), file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return e.code or 0
    host, port = sock.getsockname()[:2]
    if not is_loopback(args.host):
        print(f"npqwen: listening on {args.host} (port {port}): other machines can reach this server, which has "
              f"no authentication", file=sys.stderr)
    service = Service(model, tok, model_id, gen_cfg, args.max_batch, args.prompt_cache_mb, drafter=drafter)
    shown = f"[{host}]" if ":" in host else host
    print(f"npqwen: serving {model_id} at http://{shown}:{port}/v1 (OpenAI API; Ctrl-C stops)", file=sys.stderr,
          flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level=args.log_level, timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:   # uvicorn shuts down cleanly on Ctrl-C, then raises it again
        pass
    finally:
        service.close()
    print("npqwen: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
