"""Print the development configuration that ``make run`` writes to ./config.toml."""

DEV_CONFIG = """\
# Written by `make run` for local development. Edit freely; it is not overwritten.
[server]
bind_address = "127.0.0.1"
port = 8000

[global.access_policy]
# Allow everything: this is a local development registry. Production configs
# should keep the secure default (deny) and list rules.
default = "allow"

[blob_store.fs]
root_dir = "./data"
"""

if __name__ == "__main__":
    print(DEV_CONFIG, end="")
