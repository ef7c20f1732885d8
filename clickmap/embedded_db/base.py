"""Django's PostgreSQL backend, on the embedded server (clickmap/embedded_db).

settings.DATABASES names it with ENGINE "clickmap.embedded_db" and the server's data
directory as DATA_DIR. The first connection of a process starts the server when it is
not running and connects through its Unix socket; a connection that fails (the server
was stopped or killed since, or the database is not created yet) starts the server and
creates the database, then tries once more.
"""

from pathlib import Path

import psycopg
from django.db.backends.postgresql import base, client

from clickmap import embedded_db


class DatabaseClient(client.DatabaseClient):
    """`manage.py dbshell`: the wheel's psql, through the server's socket."""

    executable_name = str(embedded_db.BIN_DIR / "psql")

    @classmethod
    def settings_to_cmd_args_env(cls, settings_dict, parameters):
        host = str(embedded_db.start(Path(settings_dict["DATA_DIR"])))
        args, env = super().settings_to_cmd_args_env(
            {**settings_dict, "HOST": host, "PORT": embedded_db.PORT}, parameters
        )
        return [cls.executable_name, *args[1:]], env


class DatabaseWrapper(base.DatabaseWrapper):
    client_class = DatabaseClient
    _socket_dirs: dict[str, str] = {}  # data directory -> socket directory, per process

    def get_connection_params(self):
        params = super().get_connection_params()
        data_dir = self.settings_dict["DATA_DIR"]
        if data_dir not in self._socket_dirs:
            self._socket_dirs[data_dir] = str(embedded_db.start(Path(data_dir)))
        params["host"] = self._socket_dirs[data_dir]
        params["port"] = embedded_db.PORT  # never PGPORT's, which may name another server
        return params

    def get_new_connection(self, conn_params):
        try:
            return super().get_new_connection(conn_params)
        except psycopg.OperationalError:
            data_dir = self.settings_dict["DATA_DIR"]
            socket_dir = embedded_db.start(Path(data_dir), conn_params["dbname"])
            self._socket_dirs[data_dir] = conn_params["host"] = str(socket_dir)
            return super().get_new_connection(conn_params)
