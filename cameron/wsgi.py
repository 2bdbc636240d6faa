"""The WSGI entry point gunicorn serves: `cameron.wsgi:app`."""

from cameron import api, config, store
from cameron.gateway import ActorGateway


def get_app():
    settings = config.from_env()
    return api.create_app(ActorGateway(settings), store.connect(settings.effective_redis_url))


app = get_app()
