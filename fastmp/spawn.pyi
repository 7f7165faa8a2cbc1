# The stdlib's multiprocessing.spawn, re-exported (see spawn.py).
from multiprocessing.spawn import *
from multiprocessing.spawn import (
    WINEXE as WINEXE,
    WINSERVICE as WINSERVICE,
    is_forking as is_forking,
    prepare as prepare,
    spawn_main as spawn_main,
)

__all__ = [
    "_main", "freeze_support", "set_executable", "get_executable",
    "get_preparation_data", "get_command_line", "import_main_path",
]
