"""Environment code's side of envd: what runs inside the sandbox (zygote.py, worker.py and the app machinery they
use) and envd's handle on it (host.py). Nothing here runs in envd's own process except host.py."""
