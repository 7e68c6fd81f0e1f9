"""OxygenREC Feast feature repository: definitions.py (Feast objects), store.py (the adapter), yaml profiles.

``from feature_repo import OxyFeatureStore`` does not import feast (that happens on first use)."""

from feature_repo.store import OxyFeatureStore, local_redis_server, redis_connection_string

__all__ = ["OxyFeatureStore", "local_redis_server", "redis_connection_string"]
