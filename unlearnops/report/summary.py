"""The plain-language part of the report: a summary generated from the numbers, and the limits of the evidence.

Every sentence is built from a value in the RequestReport; none is written by hand for a case, so
a failed check, an unverified log or a mismatching endpoint changes the words, not only a table
cell. `tone` tells the template how to mark a sentence: ok, warn (a limit the reader must know)
or bad (the evidence does not hold).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timezone
from typing import Any

from .evidence import RequestReport, parse_time

LEGAL_BASES = {
    "gdpr-art17": "GDPR Art. 17 (right to erasure)",
    "ccpa-deletion": "CCPA right to delete",
    "copyright": "copyright",
    "contract": "contract",
    "court-order": "court order",
    "other": "other",
}


@dataclass(frozen=True)
class Sentence:
    text: str
    tone: str = "ok"  # ok | warn | bad


def when(text: str | None) -> str:
    """'2 Nov 2026, 09:30 UTC' from an ISO timestamp; '-' when absent."""
    return "-" if not text else parse_time(text).astimezone(timezone.utc).strftime("%-d %b %Y, %H:%M UTC")


def day(text: str | None) -> str:
    return "-" if not text else parse_time(text).astimezone(timezone.utc).strftime("%-d %b %Y")


def num(value: Any, digits: int = 1) -> str:
    return "n/a" if not isinstance(value, (int, float)) else f"{value:.{digits}f}"


def summarise(report: RequestReport) -> list[Sentence]:
    sentences = [_status_sentence(report)]
    if not report.audit.get("ok"):
        sentences.append(Sentence(f"The audit log does NOT verify ({report.audit.get('reason')}): the records behind this report may "
                                  "have been altered; treat every statement below as unproven.", "bad"))
    evidence = report.evidence
    if evidence is None:
        sentences.append(Sentence("No release evidence can be shown for this request yet.", "warn"))
        return sentences
    sentences += _evidence_sentences(evidence)
    sentences += _later_sentences(report)
    sentences += _endpoint_sentences(report)
    if report.audit.get("ok"):
        signed = ", signed, and matching its checkpoint kept outside the workspace" if report.audit.get("checkpoint") else ""
        anchors = f"; the registry agrees with it on {report.audit['versions_checked']} model version(s)" if report.audit.get("anchored") else ""
        sentences.append(Sentence(f"The audit log verifies: {report.audit['checked']} records, none edited, removed or reordered{signed}{anchors}."))
    return sentences


def _status_sentence(report: RequestReport) -> Sentence:
    request, lineage = report.request, report.lineage
    basis = LEGAL_BASES.get(request.get("legal_basis") or "", request.get("legal_basis") or "an unrecorded legal basis")
    head = f"Request {request['request_id']} ({basis}, received {day(request.get('received_at') or request.get('recorded'))}, deadline {day(request.get('deadline'))})"
    version = (lineage.get("version") or {}).get("ref")
    if request["status"] == "satisfied":
        deadline = ""
        if request.get("deadline_met") is True:
            deadline = ", before the deadline"
        elif request.get("deadline_met") is False:
            deadline = ", AFTER the deadline"
        live = [d for d in lineage.get("deployments") or [] if not d.get("stopped")]
        model = f"model {version}" if live else "a later model that still meets it"
        since = when(live[0]["timestamp"]) if live else when(request.get("first_served"))
        return Sentence(f"{head} is satisfied: {model} has been served since {since}{deadline}.")
    if request["status"] == "registered":
        tone = "bad" if request.get("overdue") else "warn"
        return Sentence(f"{head}: model {version} meets it and is registered, but it is not being served now"
                        f"{' and the deadline has passed' if request.get('overdue') else ''}.", tone)
    if request["status"] == "rejected":
        return Sentence(f"{head} was rejected at validation.", "warn")
    return Sentence(f"{head} is pending: no model that meets it has been registered{' and the deadline has passed' if request.get('overdue') else ''}.",
                    "bad" if request.get("overdue") else "warn")


def _evidence_sentences(evidence: dict[str, Any]) -> list[Sentence]:
    rows, policy, gap = evidence["rows"], evidence["policy"], evidence["quantization_gap"]
    source, retrain, shipped = rows.get("source") or {}, rows.get("retrain") or {}, rows.get("quantized") or {}
    checks = {check["name"]: check for check in evidence["gate"]["checks"]}
    sentences = []
    gate = evidence["gate"]
    model = "the model that ships (4-bit)" if evidence.get("registered", True) else "the 4-bit model made for it, so nothing was registered or served"
    sentences.append(Sentence(
        f"The release gate {'PASSED' if gate['passed'] else 'FAILED'} on {model}: "
        f"{sum(c['status'] == 'passed' for c in checks.values())} of {len(checks)} checks passed"
        + (f", {sum(c['status'] == 'skipped' for c in checks.values())} were not checked" if any(c["status"] == "skipped" for c in checks.values()) else "")
        + ".", "ok" if gate["passed"] else "bad"))
    never = f"; a model never trained on them scores {num(retrain.get('verbmem_f'))}" if retrain.get("verbmem_f") is not None else ""
    sentences.append(Sentence(
        f"It no longer reproduces the requested texts as the original did: verbatim overlap with them fell from "
        f"{num(source.get('verbmem_f'))} to {num(shipped.get('verbmem_f'))} out of 100 (allowed: at most {num(policy.get('max_verbmem_f'))}{never}).",
        _tone(checks.get("verbmem_f"))))
    never = f"; never-trained model {num(retrain.get('knowmem_f'))}" if retrain.get("knowmem_f") is not None else ""
    sentences.append(Sentence(
        f"Its answers to questions about the requested data match the true answers {num(shipped.get('knowmem_f'))} out of 100 "
        f"(original {num(source.get('knowmem_f'))}; allowed at most {num(policy.get('max_knowmem_f'))}{never}).",
        _tone(checks.get("knowmem_f"))))
    utility = checks.get("utility_ratio") or {}
    sentences.append(Sentence(
        f"It kept its other knowledge: on questions about data it must keep it scores {num(shipped.get('knowmem_r'))} "
        f"(original {num(source.get('knowmem_r'))}; it must keep at least {num((policy.get('min_utility_ratio') or 0) * 100, 0)}% of the original).",
        _tone(utility)))
    sentences.append(_privacy_sentence(shipped, policy, checks.get("privleak")))
    gaps = [f"{label} {num(gap.get(key))}" for key, label in (("verbmem_f", "verbatim overlap"), ("knowmem_f", "answers")) if gap.get(key) is not None]
    if gaps:
        gap_checks = [c for name, c in checks.items() if name.startswith("quantization_gap.")]
        failed = any(c["status"] == "failed" for c in gap_checks)
        sentences.append(Sentence(
            ("4-bit quantization brought forgotten data back beyond the allowed gap: " if failed else
             "4-bit quantization did not bring forgotten data back beyond the allowed gap: ")
            + ", ".join(gaps) + f" points, 4-bit minus full precision (allowed at most {num(policy.get('max_quant_gap'))}).",
            "bad" if failed else "ok"))
    return sentences


def _privacy_sentence(shipped: dict[str, Any], policy: dict[str, Any], check: dict[str, Any] | None) -> Sentence:
    value = shipped.get("privleak")
    bound = policy.get("max_abs_privleak")
    if value is None or (check or {}).get("status") == "skipped":
        return Sentence("Whether membership of the requested texts can still be detected (PrivLeak) was NOT measured: there is no "
                        "never-trained reference for this data.", "warn")
    if abs(value) <= 5:
        finding = "an attacker cannot tell the requested texts from texts the model never saw, as for a model never trained on them"
    elif value < 0:
        finding = "an attacker can still tell that the requested texts were in the training data better than for a model never trained on them"
    else:
        finding = "the model treats the requested texts as unusually foreign (over-unlearning), which is itself detectable"
    bound_text = ""
    if isinstance(bound, (int, float)):
        bound_text = f"; the gate allows up to ±{num(bound, 0)}" + (", so this did not block the release" if abs(value) > 5 and abs(value) <= bound else "")
    tone = "bad" if (check or {}).get("status") == "failed" else ("warn" if abs(value) > 5 else "ok")
    return Sentence(f"Privacy leakage (PrivLeak, 0 is ideal, -100 is fully detectable): {num(value)}: {finding}{bound_text}.", tone)


def _tone(check: dict[str, Any] | None) -> str:
    status = (check or {}).get("status")
    return {"failed": "bad", "skipped": "warn"}.get(status, "ok")


def _later_sentences(report: RequestReport) -> list[Sentence]:
    later = report.later_versions
    if not later:
        return []
    holding = [v for v in later if v["gate_passed"] and v["checks"] and all(c["status"] == "passed" for c in v["checks"])]
    broken = [v for v in later if v not in holding]
    text = (f"{len(later)} later version(s) still list this request; {len(holding)} re-checked it on its forget set and still meet it"
            + (f" ({', '.join(v['ref'] for v in holding)})" if holding else ""))
    if broken:
        text += f"; {', '.join(v['ref'] for v in broken)} could not show it"
    return [Sentence(text + ".", "bad" if broken else "ok")]


def _endpoint_sentences(report: RequestReport) -> list[Sentence]:
    checks = report.endpoint_checks
    if not checks:
        live = report.request.get("live_deployments")
        return [Sentence("The live endpoint has not been verified" + (" although a model is being served: run `unlearnops "
                         "verify-endpoint`." if live else "."), "warn" if live else "ok")]
    sentences = []
    for check in checks:
        where = f"{check.get('endpoint')} ({check.get('served_model_name') or check.get('name')})"
        if check["passed"]:
            sentences.append(Sentence(f"The live endpoint {where} was verified on {when(check['timestamp'])}: it answers as the measured model does."))
        else:
            failed = ", ".join(check.get("failed_checks") or []) or "its checks"
            sentences.append(Sentence(f"MISMATCH at {where} on {when(check['timestamp'])}: the model answering there is not the one "
                                      f"measured ({failed} disagree).", "bad"))
    return sentences


def limits(report: RequestReport) -> list[Sentence]:
    """What the evidence does not show, with this request's sample sizes."""
    evidence = report.evidence or {}
    counts = evidence.get("counts") or {}
    sentences = []
    sizes = [(counts.get("verbmem_f"), "passages for verbatim overlap"), (counts.get("knowmem_f"), "questions about the requested data"),
             (counts.get("knowmem_r"), "questions about data to keep")]
    described = [f"{n} {what} (one item moves the score by up to {num(100 / n)} points)" for n, what in sizes if n]
    if described:
        sentences.append(Sentence("Sample sizes: " + "; ".join(described) + ".", "warn" if min(n for n, _ in sizes if n) < 30 else "ok"))
    reference = evidence.get("privleak_reference") or {}
    if reference.get("privleak_noise_95") is not None:
        sentences.append(Sentence(
            f"Sampling alone moves the privacy leakage score by up to ±{num(reference['privleak_noise_95'], 0)} points (95%) at these "
            f"sample sizes" + (f"; that is as wide as the gate's bound, so the privacy check cannot mean much: use at least "
                                 f"{reference.get('texts_needed')} requested and {reference.get('texts_needed')} never-seen texts"
                                 if reference.get("too_small") else "") + ".",
            "bad" if reference.get("too_small") else "warn"))
    if counts.get("privleak_forget"):
        sentences.append(Sentence(
            f"Membership was tested on {counts['privleak_forget']} requested and {counts.get('privleak_holdout')} never-seen texts; "
            "with so few texts the leakage score is coarse (its steps are large and its uncertainty wide).",
            "warn" if counts["privleak_forget"] < 30 else "ok"))
    if (evidence.get("settings") or {}).get("limit"):
        sentences.append(Sentence(f"The evaluation used at most {evidence['settings']['limit']} items per metric (the pipeline's "
                                  "setting), not every item the request supplied.", "warn"))
    sentences += [
        Sentence("The scores measure the requested texts and the questions supplied with them. They do not prove that no other "
                 "wording, paraphrase, or a targeted extraction attack can recover the data."),
        Sentence("Verbatim overlap (VerbMem) and answer match (KnowMem) are ROUGE-L word-overlap scores of greedy model output; "
                 "privacy leakage (PrivLeak) is one membership-inference test (Min-K% Prob), not every possible attack."),
        Sentence("Kept knowledge is measured on the supplied retain questions only, not on the model's general abilities."),
        Sentence("The thresholds are the operator's release policy, not a legal standard; a passing gate shows the policy was met."),
        Sentence("The model files were measured before release; an endpoint verification shows that the served model answered the "
                 "same way at the time it ran, not at every moment since."),
    ]
    return sentences
