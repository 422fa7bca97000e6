"""The pure domain core: every inventory rule, with no Kafka, Faust or I/O imports.

Runs the mypyc-compiled build of its rule modules when one matching these sources exists
(see streams.core.native), else the same modules as pure Python.
"""

from streams.core.native import activate

NATIVE = activate(__path__)
