"""The SQL migrations, shipped in the wheel as the package data of `dispatch.migrations` (see pyproject.toml).

A regular package so that `importlib.resources.files("dispatch.migrations")` finds them in an editable
install too; dispatch/migrate.py reads only the `NNNN_description.sql` files.
"""
