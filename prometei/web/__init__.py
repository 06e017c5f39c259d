"""Flask app factories and blueprints used by `api/*.py` and the local all-in-one server."""
