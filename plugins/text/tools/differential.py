#!/usr/bin/env python3
"""Differential check of tessera-text against the reference HF `tokenizers` library.

Generates random texts (mixed scripts, controls, specials, class names, long words) and random
id lists, runs the reference and this crate's `encode_json` / `decode_json` examples, and
reports every mismatch. Needs `pip install tokenizers`; run from `plugins/`:

    python3 text/tools/differential.py [path/to/wordpiece_4m_30k.json]
"""
import json, os, random, subprocess, sys, tempfile
from tokenizers import Tokenizer

VOCAB = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '../../../../shared/fixtures/text/wordpiece_4m_30k.json')
tok = Tokenizer.from_file(VOCAB)
random.seed(7)
atoms = ['a','the','Cat','DOG','house','lake','running','unbelievable','xyz','qqqq','12','3.5','1,000',
 ' ','  ','\t','\n','\r\n','\u00a0','\u2009','\u3000','\u200b','\u200d','\u200c','\ufeff','\x00','\x07','\x7f','\ufffd',
 '.',',','!','?',"'",'"','-','—','(',')','[',']','{','}','#','##','$','^','`','~','_','=','+','<','>','|','\\','/','@','%','&','*',':',';','¿','¡','«','»','…','·','、','。',
 'é','É','ñ','ü','ß','İ','ı','Ǆ','ﬁ','Å','ǅ','ẞ','e\u0301','a\u0308','\u0301','\u0330','Ω','ω','Σ','σ','ς','Ж','ж','ا','ह','ि','東','京','北','タ','ワ','ー','の','서','울','한','ひ','ら','😀','🎉','👍🏽','🥰','🫠','🧑‍🚀','\ue000','\U000f0000','\u0378','\u2028','²','½','Ⅻ','①','𝔘','𝟘',
 '[S_1]','[S_0]','[S_199]','[S_200]','[s_1]','[EOS]','[PAD]','[SOS]','[UNK]','[eos]','v0=0','v0=5','v0=05','V0=5','v3=999','v0=1000','v1=500','v2=12','v0=','v4=1',
 'potted plant','Potted Plant','POTTED PLANT','potted  plant','potted\tplant','pottedplant','dining table','hot dog','HOT DOG','teddy bear','tv','TV','person','persons','apple','apples','cell phone','hair drier','traffic light','stop sign','fire hydrant','wine glass','baseball bat','sports ball','Tennis Racket','cafe\u0301','Café','zebra','ZEBRA',
 'x'*99,'y'*100,'z'*101,'ab'*60]
texts = []
for n in range(3000):
    k = random.randint(1, 12)
    parts = []
    for _ in range(k):
        parts.append(random.choice(atoms))
        r = random.random()
        if r < 0.5: parts.append(' ')
        elif r < 0.6: parts.append(random.choice(['', '\t', '  ', '-', '.']))
    texts.append(''.join(parts))
texts += [''.join(chr(random.randint(0x20, 0x2FFFF)) for _ in range(random.randint(1, 30))) for _ in range(1000)]
texts = [t for t in texts if not any(0xD800 <= ord(c) <= 0xDFFF for c in t)]
random.seed(11)
specials = [tok.token_to_id(w) for w in ['.', '?', '!', ',', "'", 'n', 't', 'm', 's', 've', 're', 'do', 'not', '##s', '##ing']]
seqs = []
for _ in range(3000):
    seq = []
    for _ in range(random.randint(0, 15)):
        r = random.random()
        if r < 0.4: seq.append(random.choice(specials))
        elif r < 0.7: seq.append(random.randint(0, 29999))
        elif r < 0.8: seq.append(random.randint(4204, 4283))
        elif r < 0.9: seq.append(random.randint(0, 210))
        else: seq.append(random.randint(29990, 30010))
    seqs.append(seq)


def run_example(name, payload):
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
        json.dump(payload, f)
    out = subprocess.run(['cargo', 'run', '-q', '--release', '-p', 'tessera-text', '--example', name,
                          '--', VOCAB, f.name], check=True, capture_output=True, text=True).stdout
    os.unlink(f.name)
    return json.loads(out)

actual = run_example('encode_json', texts)
failures = 0
for text, got in zip(texts, actual):
    ids = tok.encode(text).ids
    if got['ids'] != ids or got['decoded'] != tok.decode(ids, skip_special_tokens=False):
        failures += 1
        print('MISMATCH', repr(text), ids, got)
decoded = run_example('decode_json', seqs)
for ids, got in zip(seqs, decoded):
    expected = tok.decode(ids, skip_special_tokens=False)
    if got != expected:
        failures += 1
        print('DECODE MISMATCH', ids, repr(expected), repr(got))
print(f'{len(texts)} texts, {len(seqs)} id lists, {failures} mismatches')
sys.exit(1 if failures else 0)
