"""`dawdle dashboard`: a web app over the jobs database (extra `dawdle[dashboard]`).

Its modules import Starlette and Jinja2, which only the extra installs: `dawdle._cli_dashboard`
imports them when the command runs, with a clear error if they are missing.
"""
