"""The model as tools for clinical agents over the Model Context Protocol (official `mcp` SDK 2.x), `cxrlm mcp`.

Tools: report, classify, ground, compare (current + prior study; only models whose profile has `priors`), label
(report text -> CheXpert-14 labels, the `cxrlm label` labeler), export (a stored result -> FHIR R4 or DICOM SR).
Resources: `cxrlm://results` (the newest stored results) and `cxrlm://results/{id}` (a stored output and its
evidence record). Every call, refused ones included, is one evidence record in the server's own store
(evidence.py); tools.py bounds every argument; transport.py serves stdio or streamable HTTP. Research use only.
"""

from typing import Any

TOOL_NAMES = ("report", "classify", "ground", "compare", "label", "export")


def build_server(tools):
    """An MCPServer whose tools and resources answer from `tools` (a cxrlm.mcp.tools.Tools) and its store."""
    from mcp.server.mcpserver import MCPServer
    from mcp_types import CallToolResult

    from cxrlm import DISCLAIMER

    server = MCPServer("cxrlm", instructions=f"Chest X-ray models as tools. {DISCLAIMER}",
                       middleware=[_audit_rejected_arguments(tools)])

    @server.tool()
    def report(image_path: str) -> CallToolResult:
        """Reasoning, CheXpert-14 labels, findings and impression for one chest radiograph (PNG, JPEG, DICOM)."""
        return tools.call("report", tools.predict, "report", image_path)

    @server.tool()
    def classify(image_path: str) -> CallToolResult:
        """A probability for each CheXpert-14 and NIH-14 label for one chest radiograph."""
        return tools.call("classify", tools.predict, "classify", image_path)

    @server.tool()
    def ground(image_path: str, phrase: str) -> CallToolResult:
        """Bounding boxes (original-image pixels, with scores) for a phrase such as 'right lung'."""
        return tools.call("ground", tools.predict, "ground", image_path, phrase)

    @server.tool()
    def compare(image_path: str, prior_image_path: str, prior_report: str = "") -> CallToolResult:
        """The model's report of the current radiograph read against the patient's prior one (and its report).
        Only for models trained with priors; others refuse rather than invent a comparison."""
        return tools.call("compare", tools.compare, image_path, prior_image_path, prior_report)

    @server.tool()
    def label(report_text: str) -> CallToolResult:
        """CheXpert-14 labels (positive, negative, uncertain, not mentioned) of a radiology report's text."""
        return tools.call("label", tools.label, report_text)

    @server.tool()
    def export(result_id: str, format: str, source_path: str = "") -> CallToolResult:
        """A stored result (cxrlm://results/{id}) as FHIR R4 DiagnosticReport JSON ('fhir') or a DICOM SR file
        ('sr', its path returned); source_path: the result's DICOM, so that the SR's boxes reference it."""
        return tools.call("export", tools.export, result_id, format, source_path)

    @server.resource("cxrlm://results", mime_type="application/json")
    def results() -> list[dict[str, Any]]:
        """The newest stored results of this server (id, time, tool, uri), newest first."""
        return tools.store.listing()

    @server.resource("cxrlm://results/{result_id}", mime_type="application/json")
    def result(result_id: str) -> dict[str, Any]:
        """A stored result: the tool's output and the call's evidence record, as stored in the audit."""
        from mcp.server.mcpserver.exceptions import ResourceError

        stored = tools.store.result(result_id)
        if stored is None:
            raise ResourceError("no stored result with that id: list cxrlm://results")
        return stored

    return server


def _audit_rejected_arguments(tools):
    """A call the SDK refuses before a tool runs (unknown tool, missing or mistyped argument) is audited too, with
    a reason that names the fields, never the values sent (which may be anything)."""

    async def middleware(ctx, call_next):
        result = await call_next(ctx)
        if ctx.method != "tools/call" or not isinstance(result, dict) or not result.get("isError") or (
                result.get("structuredContent")):
            return result
        from cxrlm import DISCLAIMER
        from cxrlm.mcp.evidence import new_record

        name = str((ctx.params or {}).get("name", ""))
        text = " ".join(block.get("text", "") for block in result.get("content", []) if isinstance(block, dict))
        record = new_record(name if name in TOOL_NAMES else "unknown", tools.model_info, tools.gate)
        record["status"], record["reason"] = "refused", _rejection(name, text)
        tools.store.append(record)
        return {**result, "content": [{"type": "text", "text": record["reason"]}],
                "structuredContent": {"error": record["reason"], "evidence": record, "notice": DISCLAIMER}}

    return middleware


def _rejection(tool: str, sdk_text: str) -> str:
    """The SDK's refusal in a line of field names and pydantic's messages: the input values it quotes are left out."""
    import re

    if tool not in TOOL_NAMES:
        return f"unknown tool: use one of {', '.join(TOOL_NAMES)}"
    problems = re.findall(r"^(\w+)\n +([^\[\n]+?) \[type=", sdk_text, flags=re.MULTILINE)
    listed = "; ".join(f"{field}: {message}" for field, message in problems) or "arguments do not fit its schema"
    return f"{tool} refused its arguments: {listed} (see the tool's input schema)"
