"""`python -m streams.api`: the reservation API as a process of its own (benchmarks, manual)."""

from streams.api.handlers import main

raise SystemExit(main())
