"""`python -m predictor`: parse settings, load the model, start kserve.ModelServer."""

from __future__ import annotations

import sys

import kserve
from kserve import model_server

from .errors import install_error_handlers
from .model import SentimentPredictor
from .serving import BodyLimit, fixed_model_repository, quiet_request_logs, use_uvloop
from .settings import build_parser, settings_from


def main(argv: list[str] | None = None) -> None:
    args = build_parser(model_server.parser).parse_args(argv if argv is not None else sys.argv[1:])
    settings = settings_from(args)
    model = SentimentPredictor(settings)
    model.load()
    install_error_handlers(model_server.app)
    server = kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1)
    fixed_model_repository(server)
    quiet_request_logs(settings.log_requests)
    # uvicorn loads the app by import string: put the size limit where it will look.
    model_server.app = BodyLimit(model_server.app, settings.limits.max_body_bytes)
    use_uvloop()
    server.start([model])


if __name__ == "__main__":
    main()
