"""From checkpoint to engine in one call: named recipes (``recipe``) and the chain that runs
one (``chain``: export, precision, engine, benchmark, with a resumable step journal)."""
