"""`python -m predictor`: parse settings, load the model, start kserve.ModelServer."""

from __future__ import annotations

import sys

import kserve
from kserve import model_server

from .errors import ServiceError, service_error_handler
from .model import SentimentPredictor
from .settings import build_parser, settings_from


def main(argv: list[str] | None = None) -> None:
    args = build_parser(model_server.parser).parse_args(argv if argv is not None else sys.argv[1:])
    settings = settings_from(args)
    model = SentimentPredictor(settings)
    model.load()
    model_server.app.add_exception_handler(ServiceError, service_error_handler)
    kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1).start([model])


if __name__ == "__main__":
    main()
