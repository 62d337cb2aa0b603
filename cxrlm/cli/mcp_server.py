"""`cxrlm mcp`: the model as tools for clinical agents over the Model Context Protocol (cxrlm/mcp/, docs/MCP.md).

stdio by default (the agent starts the server); `--http HOST:PORT` serves streamable HTTP at /mcp instead. Every
call's evidence record goes to the server's own store (`--store`), never to the `cxrlm serve` database.
"""


def register(subparsers) -> None:
    from cxrlm.cli.gate import add_gate_option
    from cxrlm.cli.model_options import add_model_options

    parser = subparsers.add_parser("mcp", help="serve the model as MCP tools for agents (stdio or streamable HTTP)")
    add_model_options(parser)
    add_gate_option(parser)
    parser.add_argument("--root", default=".", help="the folder whose images the tools may read (default: here)")
    parser.add_argument("--store", default="cxrlm-mcp", metavar="DIR",
                        help="where every call's evidence record (audit.jsonl), stored results and exports go")
    parser.add_argument("--http", metavar="HOST:PORT",
                        help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio; beyond loopback "
                             "only with a token in CXRLM_MCP_TOKEN")
    parser.set_defaults(run=run_mcp)


def run_mcp(args) -> int:
    from pathlib import Path

    from cxrlm.cli.model_options import load_model_from_args
    from cxrlm.errors import ConfigError
    from cxrlm.mcp import build_server
    from cxrlm.mcp.evidence import EvidenceStore, model_info, weights_sha256
    from cxrlm.mcp.tools import Tools
    from cxrlm.mcp.transport import http_token, parse_listen, run_http

    root = Path(args.root).resolve()
    if not root.is_dir():
        raise ConfigError(f"--root {args.root} is not a folder: give the folder the tools may read images from")
    if args.http:  # a refused address fails before the model loads
        http_token(parse_listen(args.http)[0])
    try:
        store = EvidenceStore(Path(args.store))
    except OSError as err:
        raise ConfigError(f"cannot use --store {args.store}: {err.strerror}") from None
    model = load_model_from_args(args)
    tools = Tools(model, root, store, args.gate, model_info(model, weights_sha256(args.model)))
    server = build_server(tools)
    if args.http:
        run_http(server, args.http)
    else:
        server.run("stdio")
    return 0
