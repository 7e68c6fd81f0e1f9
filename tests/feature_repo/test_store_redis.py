"""Real Feast with the production online store: a throw-away redis-server (started by the redis_url fixture)."""

import pytest

from feature_repo import OxyFeatureStore, redis_connection_string
from tests.feature_repo.conftest import check_online_round_trip, check_push_updates_one_user, check_unknown_user_and_types


@pytest.fixture(scope="module")
def redis_store(tmp_path_factory, small_tables, redis_url):
    store = OxyFeatureStore(tmp_path_factory.mktemp("feast_redis"), online="redis", redis_url=redis_url)
    store.write_sources(small_tables)
    store.apply()
    store.materialize()
    return store


def test_materialized_into_redis(redis_store, redis_url):
    import redis

    host, port = redis_url.split(":")
    client = redis.Redis(host=host, port=int(port))
    try:
        assert client.dbsize() > 0  # the values really live in Redis (one hash per entity key)
    finally:
        client.close()
    text = redis_store.config_path.read_text()
    assert redis_store.config_path.name == "feature_store.redis.yaml" and f"connection_string: {redis_url}" in text
    assert not (redis_store.data_dir / "online.db").exists()


def test_online_round_trip(redis_store, small_tables, small_world):
    st = small_tables["user_short_term"]
    scenario = st.scenario.value_counts().index[0]
    active = st[st.scenario == scenario].user_id.unique().tolist()
    check_online_round_trip(redis_store, small_tables, active[:2] + active[-2:] + small_world.users.user_id.tolist()[:1], scenario)


def test_unknown_user_and_wrong_types(redis_store):
    check_unknown_user_and_types(redis_store, "cart")


def test_push_updates_one_user_only(redis_store, small_world):
    users = small_world.users.user_id.tolist()
    check_push_updates_one_user(redis_store, [users[10], users[11]], "cart")


def test_redis_connection_strings(monkeypatch):
    assert redis_connection_string("redis://10.0.0.5:6380/2") == "10.0.0.5:6380,db=2"
    assert redis_connection_string("redis://:s3cret@cache:6379") == "cache:6379,password=s3cret"
    assert redis_connection_string("host:1234,db=1") == "host:1234,db=1"
    monkeypatch.setenv("OXYREC_REDIS_URL", "envhost:7000")
    assert redis_connection_string(None) == "envhost:7000"
    monkeypatch.delenv("OXYREC_REDIS_URL")
    assert redis_connection_string(None) == "127.0.0.1:6379"
    with pytest.raises(ValueError, match="redis url"):
        redis_connection_string("http://x:1")
