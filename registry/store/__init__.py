"""The one store: the SQL mirror's models, engine, migrations and queries."""
