"""MkDocs hook: `<!-- keras-mtl-help COMMAND -->` in a page becomes that command's `--help` text.

The commands' options are documented where they are defined, in `keras_mtl_cli`'s argparse parsers
(standard library only, so this imports no TensorFlow); the reference page shows them as the command prints them.
"""

import os
import re

import keras_mtl_cli

MARKER = re.compile(r"<!-- keras-mtl-help (\w+) -->")


def on_page_markdown(markdown, page, config, files):
    if not MARKER.search(markdown):
        return markdown
    # argparse wraps at the terminal's width: a fixed one, so the page does not depend on who built it.
    os.environ["COLUMNS"] = "100"
    parser, commands = keras_mtl_cli.build_parser()

    def help_text(match):
        name = match.group(1)
        target = parser if name == "keras-mtl" else commands[name]
        return f"```text\n{target.format_help()}```"

    return MARKER.sub(help_text, markdown)
