"""An npqwen server on a free loopback port, in a thread of the test process (uvicorn, as
`python -m npqwen.serve` runs it), so that tests reach it over real HTTP and can still look at its
engine."""

import contextlib
import threading
import time

from npqwen.generation_config import read_generation_config
from npqwen.serve import Service, create_app, listen
from npqwen.tokenizer import Tokenizer


@contextlib.contextmanager
def running_server(model, folder, model_id="demo", **service_options):
    """-> (base URL, Service) while the server runs."""
    import uvicorn

    tok = Tokenizer(folder)
    service = Service(model, tok, model_id, read_generation_config(folder, model.config.vocab_size), **service_options)
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", service
    finally:
        server.should_exit = True
        thread.join(30)
        service.close()
