"""fbserve through the official OpenAI Python client (scripts/test-openai-client.sh starts the server).

Each check compares with fbrun's greedy answer for the same prompt, given on the command line as JSON:
    python openai_client_test.py PORT EXPECTED.json IMAGE.png
Prints 'N passed, N failed' and exits non-zero on any failure.
"""
import base64
import json
import sys

import openai

port, expected_path, image_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
expected = json.load(open(expected_path))
client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="test-key")
image_url = "data:image/png;base64," + base64.b64encode(open(image_path, "rb").read()).decode()

passed, failed = 0, 0


def check(name, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def image_message(question):
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                         {"type": "text", "text": question}]}]


models = client.models.list()
check("models.list names the model", [m.id for m in models.data] == [expected["model"]], str(models.data))

for question, answer in expected["image_answers"].items():
    reply = client.chat.completions.create(model=expected["model"], messages=image_message(question), temperature=0)
    check(f"chat with image: {question}", reply.choices[0].message.content == answer,
          f"{reply.choices[0].message.content!r} != {answer!r}")
    check(f"usage adds up: {question}",
          reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens > 0)

    stream = client.chat.completions.create(model=expected["model"], messages=image_message(question), temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    pieces, reasons, usage = [], [], None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
    check(f"streamed chat: {question}", "".join(pieces) == answer and reasons == ["stop"], f"{pieces} {reasons}")
    check(f"streamed usage: {question}", usage is not None and usage.completion_tokens == reply.usage.completion_tokens)

text = expected["text"]
reply = client.chat.completions.create(model=expected["model"], temperature=0, max_tokens=text["max_tokens"],
                                       messages=[{"role": "user", "content": text["question"]}])
check("chat without image", reply.choices[0].message.content == text["answer"],
      f"{reply.choices[0].message.content!r} != {text['answer']!r}")

completion = client.completions.create(model=expected["model"], prompt=expected["completion"]["prompt"], temperature=0,
                                       max_tokens=expected["completion"]["max_tokens"])
check("completions", completion.choices[0].text == expected["completion"]["answer"],
      f"{completion.choices[0].text!r} != {expected['completion']['answer']!r}")

try:
    client.chat.completions.create(model=expected["model"], messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    check("an http image URL is refused", False, "no error raised")
except openai.BadRequestError as e:
    check("an http image URL is refused", e.status_code == 400 and "data: URL" in str(e), str(e))

try:
    openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong").models.list()
    check("a wrong key is refused", False, "no error raised")
except openai.AuthenticationError as e:
    check("a wrong key is refused", e.status_code == 401, str(e))

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
