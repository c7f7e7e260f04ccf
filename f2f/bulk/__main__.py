"""`python -m f2f.bulk MANIFEST --out DIR ...`: the Ray job entry point (`ray job submit -- python -m f2f.bulk ...`)."""

from f2f.bulk.command import main

main(prog_name="python -m f2f.bulk")
