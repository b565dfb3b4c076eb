#!/usr/bin/env python3
"""Write a tiny random-weight llama-architecture GGUF model for `make interop`.

No weights are downloaded: the model is 2 layers, embedding 64, a ~400-token
SentencePiece-style ("llama") vocabulary with the 256 byte tokens
<0x00>..<0xFF>, <unk>, <s>, </s> and some words, random weights from a fixed
seed (the same bytes every run), and a chat template in
tokenizer.chat_template so that /v1/chat/completions works.  Its output is
gibberish; the interop checks only need a real server streaming real tokens.

Usage: make_tiny_gguf.py OUT.gguf [--seed N]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType, TokenType

N_CTX_TRAIN = 256
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 4
N_FF = 128
N_LAYER = 2

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

WORDS = """the a an and of to in is it you that he was for on are with as his they be at one have
this from or had by hot word but what some we can out other were all there when up use your how
said each she which do their time if will way about many then them write would like so these her
long make thing see him two has look more day could go come did number sound no most people my over
know water than call first who may down side been now find llama model token stream batch prompt
hello world server once upon colour red green blue""".split()


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    # Every printable ASCII character and "▁" (SentencePiece's space) as pieces,
    # then words with each prefix, so the merge-based SPM tokenizer reaches them.
    pieces: list[str] = ["\u2581"] + [chr(c) for c in range(33, 127)]
    for word in WORDS:
        spelled = "\u2581" + word
        pieces += [spelled[:i] for i in range(2, len(spelled) + 1)]
    seen = set(tokens)
    for piece in pieces:
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            types.append(TokenType.NORMAL)
    # Longer pieces score higher, so they win the merges.
    scores = [0.0] * 3 + [0.0] * 256 + [float(len(t)) - 100.0 for t in tokens[259:]]
    return tokens, scores, [int(t) for t in types]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)
    rng = np.random.default_rng(args.seed)

    def rand(*shape: int, std: float = 0.08) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    tmp = args.out + ".tmp"
    writer = GGUFWriter(tmp, "llama")
    writer.add_name("streamrun-interop-tiny-llama")
    writer.add_file_type(LlamaFileType.ALL_F32)
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)

    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    # numpy shapes are (rows, cols); ggml's ne is the reverse.
    f32 = GGMLQuantizationType.F32
    n_embd_kv = N_EMBD // N_HEAD * N_HEAD_KV
    writer.add_tensor("token_embd.weight", rand(n_vocab, N_EMBD, std=0.5), raw_dtype=f32)
    for i in range(N_LAYER):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32), raw_dtype=f32)
        writer.add_tensor(f"blk.{i}.attn_q.weight", rand(N_EMBD, N_EMBD), raw_dtype=f32)
        writer.add_tensor(f"blk.{i}.attn_k.weight", rand(n_embd_kv, N_EMBD), raw_dtype=f32)
        writer.add_tensor(f"blk.{i}.attn_v.weight", rand(n_embd_kv, N_EMBD), raw_dtype=f32)
        writer.add_tensor(f"blk.{i}.attn_output.weight", rand(N_EMBD, N_EMBD), raw_dtype=f32)
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32), raw_dtype=f32)
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", rand(N_FF, N_EMBD), raw_dtype=f32)
        writer.add_tensor(f"blk.{i}.ffn_up.weight", rand(N_FF, N_EMBD), raw_dtype=f32)
        writer.add_tensor(f"blk.{i}.ffn_down.weight", rand(N_EMBD, N_FF), raw_dtype=f32)
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32), raw_dtype=f32)
    writer.add_tensor("output.weight", rand(n_vocab, N_EMBD, std=0.5), raw_dtype=f32)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: llama, {N_LAYER} layers, n_embd {N_EMBD}, vocab {n_vocab}, seed {args.seed}")


if __name__ == "__main__":
    main()
