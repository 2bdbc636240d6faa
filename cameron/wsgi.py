"""The WSGI entry point gunicorn serves: `cameron.wsgi:app`."""

from cameron import api, config, store
from cameron.gateway import ActorGateway


def get_app():
    settings = config.from_env()
    url = settings.effective_redis_url
    # Starts wait for Redis at most redis_timeout; /api/health's ping at most health_timeout.
    jobs = store.JobStore(store.connect(url, settings.redis_timeout), settings.engine,
                          idempotency_ttl=settings.idempotency_ttl)
    return api.create_app(ActorGateway(settings), store.connect(url, settings.health_timeout), jobs,
                          settings)


app = get_app()
