"""`python -m longread ...`: the command line, for when the `longread` script is not on PATH."""

if __name__ == "__main__":
    from .cli import app

    app(prog_name="longread")
