"""Optional integrations with other libraries. Each submodule imports its library lazily, so
``import dash_flex`` never needs them."""
