"""The WSGI entry point gunicorn serves: `cameron.wsgi:app`."""

from cameron import api, config, store
from cameron.gateway import ActorGateway


def get_app():
    settings = config.from_env()
    client = store.connect(settings.effective_redis_url)
    jobs = store.JobStore(client, settings.engine, idempotency_ttl=settings.idempotency_ttl)
    return api.create_app(ActorGateway(settings), client, jobs, settings)


app = get_app()
