"""A teacher behind an OpenAI-compatible server: vLLM, TGI, SGLang, llama.cpp, Ollama, OpenAI.

Start a server, e.g. ``vllm serve HuggingFaceTB/SmolLM2-135M-Instruct --served-model-name
smollm2 --api-key "$MSTUDY_API_KEY"``, then run::

    MSTUDY_API_KEY=... python examples/remote_server.py \\
        --base-url http://127.0.0.1:8000/v1 --model smollm2 --concurrency 32

The API key is read from the environment variable named by ``--api-key-env`` (never from the
command line, where it would land in the shell history) and is never printed: the teacher
shows it as ``'***'``. Completions are kept in a call cache, so running again costs nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mstudy

FACTS = Path(__file__).parent / "data" / "facts.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description="Study facts with a remote teacher.")
    parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", help="the served model name (default: the server's only one)")
    parser.add_argument(
        "--api-key-env", default="MSTUDY_API_KEY", help="environment variable with the API key"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--limit", type=int, help="study only the first N facts")
    parser.add_argument("--out", type=Path, default=Path("out/remote"))
    args = parser.parse_args()

    teacher = mstudy.RemoteTeacher(
        args.model,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        concurrency=args.concurrency,
    )
    with teacher:
        print(teacher)  # api_key='***' when a key was found
        study = mstudy.Study(
            teacher,
            [
                mstudy.Reverse(n=3, params={"temperature": 0.7, "max_new_tokens": 48, "seed": 0}),
                mstudy.Paraphrase(n=2, params={"max_new_tokens": 64, "seed": 0}),
                "explain",
            ],
            filters=["length", "reverse_check", "dedup"],
            sinks=[args.out / "enriched.jsonl"],
            rejects=args.out / "rejects.jsonl",
            cache=args.out / "calls.sqlite",
        )
        report = study.run(FACTS, limit=args.limit)
    print(report)
    print(f"{report.completion_tokens / report.elapsed:.0f} completion tokens/s")
    strategies = report.to_dict()["strategies"].values()
    failed = [r for s in strategies for r in s["rejected_by"] if r["stage"] == "teacher"]
    assert report.status == "done" and report.accepted > 0, report.status
    assert not failed, f"requests the server did not answer: {failed}"


if __name__ == "__main__":
    main()
