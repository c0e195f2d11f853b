"""Pull-through configuration: upstream tables are validated like downstreams, ``namespace``
(registry proxying) is a host and unique, and a repository is a cache or a replication source."""

from __future__ import annotations

import pytest

from angos.config import ConfigError, load_config_text

BASE = """\
[server]
bind_address = "127.0.0.1"

[blob_store.fs]
root_dir = "/tmp/angos-config-test"
"""


def test_upstreams_parse_in_order_with_their_options():
    cfg = load_config_text(BASE + """
[repository."docker-hub"]
namespace = "docker.io"
immutable_tags = true

[[repository."docker-hub".upstream]]
url = "https://registry-1.docker.io"
username = "me"
password = "token"
read_timeout_secs = 20

[[repository."docker-hub".upstream]]
url = "https://mirror.example.com/hub"
server_ca_bundle = "/etc/ssl/mirror.pem"
max_redirect = 0
""")
    repo = cfg.repository["docker-hub"]
    assert repo.namespace == "docker.io"
    assert [u.url for u in repo.upstream] == ["https://registry-1.docker.io", "https://mirror.example.com/hub"]
    assert repo.upstream[0].read_timeout_secs == 20 and repo.upstream[0].connect_timeout_secs == 30
    assert repo.upstream[1].max_redirect == 0 and repo.upstream[1].username is None


@pytest.mark.parametrize("text,needle", [
    ('[[repository."hub".upstream]]\nurl = "registry-1.docker.io"\n', "repository.hub.upstream[0].url"),
    ('[[repository."hub".upstream]]\nurl = "https://h"\nusername = "u"\n',
     "repository.hub.upstream[0]: username and password go together"),
    ('[[repository."hub".upstream]]\nurl = "https://h"\nclient_certificate = "/c.pem"\n',
     "repository.hub.upstream[0]: client_certificate and client_private_key go together"),
    ('[[repository."hub".upstream]]\nurl = "https://h"\nmax_redirect = 300\n', "repository.hub.upstream[0].max_redirect"),
    ('[[repository."hub".upstream]]\nurl = "https://h"\nread_timeout_secs = 0\n',
     "repository.hub.upstream[0].read_timeout_secs"),
    ('[[repository."hub".upstream]]\nurl = "https://h"\nusrname = "u"\n', "did you mean 'username'"),
    ('[repository."hub"]\nnamespace = "https://docker.io"\n', "repository.hub.namespace: expected a registry host"),
    ('[repository."a"]\nnamespace = "docker.io"\n[repository."b"]\nnamespace = "Docker.io"\n',
     "repository.b.namespace: 'Docker.io' is already the namespace of repository 'a'"),
    ('[[repository."hub".upstream]]\nurl = "https://h"\n[[repository."hub".downstream]]\nname = "d"\nurl = "https://d"\n',
     "repository.hub: a repository is either a pull-through cache"),
])
def test_bad_pull_through_settings_name_the_key(text, needle):
    with pytest.raises(ConfigError) as err:
        load_config_text(BASE + text)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)
