import os

from drpo.backends.factory import build_role_models
from drpo.state.settings import ROLES, load_settings


class FakeServers:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def url_for(self, model: str | os.PathLike[str]) -> str:
        self.asked.append(str(model))
        return "http://127.0.0.1:9/v1"


def test_every_embedded_role_gets_a_client_from_the_one_server_pool() -> None:
    # The default settings: all four roles on the embedded model (a regression: the replica
    # pool of one role once replaced the server pool for the roles after it).
    settings = load_settings(environ={})
    servers = FakeServers()
    models = build_role_models(settings, pool=servers, cache=None, sink=None, run_id="r")
    assert set(models.clients) == set(ROLES)
    assert servers.asked == [settings.role(role).model for role in ROLES]
