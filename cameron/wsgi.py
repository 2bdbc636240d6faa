"""The WSGI entry point gunicorn serves: `cameron.wsgi:app`."""

from cameron import api, config
from cameron.gateway import ActorGateway


def get_app():
    return api.create_app(ActorGateway(config.from_env()))


app = get_app()
