"""Configs: every key read, typed and checked, and whatever can be checked before a model loads is."""

import pytest
import torch
import yaml
from safetensors.torch import load_file

from llm2comp import LLM2Comp
from llm2comp.cli.main import main
from llm2comp.errors import ConfigError, OutputError
from llm2comp.recipes import run_stage
from llm2comp.recipes.pipeline import load_pipeline
from llm2comp.recipes.pretrain import run_pretrain
from llm2comp.recipes.stage_config import load_stage_config
from llm2comp.recipes.stage_config import stage_config as StageConfig
from llm2comp.training.checkpoint import list_checkpoints

from .training_helpers import tiny_stage_config, write_corpus


def config_file(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, stage, key", [
    ("stage: unsupervised\nlr: 1.0e-4\nobjective: nll\n", "unsupervised", "objective"),
    ("stage: supervised\ndata: {type: wiki_demo}\nattention_dropout: 0.3\n", "supervised", "attention_dropout"),
    ("stage: unsupervised\nmin_chars: 100\n", "unsupervised", "min_chars"),
])
def test_a_stage_rejects_keys_it_does_not_read(tmp_path, text, stage, key):
    path = config_file(tmp_path, text)
    line = text.splitlines().index(next(row for row in text.splitlines() if row.startswith(key))) + 1
    with pytest.raises(ConfigError, match=rf"c.yaml:{line}: stage '{stage}' does not read '{key}'"):
        load_stage_config(path)
    with pytest.raises(ConfigError, match=r"--objective \(command line\): stage 'supervised' does not read"):
        load_stage_config(None, ["--objective", "nll"], stage="supervised", data={"type": "wiki_demo"})


@pytest.mark.parametrize("text, message", [
    ("max_steps: ten\n", r"c.yaml:1: max_steps must be a whole number, got 'ten'"),
    ("max_steps: 2.7\n", r"c.yaml:1: max_steps must be a whole number, got 2.7"),
    ("stage: pretrain\nbatch_size: 1.5\n", r"c.yaml:2: batch_size must be a whole number, got 1.5"),
    ("gradient_checkpointing: 'yes'\n", r"gradient_checkpointing must be true or false, got 'yes'"),
    ("lr: -1.0\n", r"c.yaml:1: lr must be > 0, got -1.0"),
    ("objective: kll\n", r"objective must be one of kl, nll, reconstruction, mntp, got 'kll'"),
    ("lora: {alpah: 8}\n", r"c.yaml:1: lora: unknown key\(s\) \['alpah'\]"),
    ("lora: 5\n", r"c.yaml:1: lora must be a mapping"),
    ("lora: {r: 0}\n", r"c.yaml:1: lora.r must be >= 1, got 0"),
    ("data: {type: text, pth: x.txt}\n", r"c.yaml:1: data: unknown data source key\(s\) \['pth'\]"),
    ("stage: pretrain\nlora: {r: 4\nlr: 1\n", r"c.yaml:3:3: invalid YAML: .*expected ',' or '}'"),
    ("- a list\n", r"c.yaml: expected a mapping of keys to values, got list"),
])
def test_values_are_typed_and_errors_name_file_line_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_stage_config(config_file(tmp_path, text))


def test_numbers_are_read_as_their_type(tmp_path):
    cfg = load_stage_config(config_file(tmp_path, "lr: 3e-5\nweight_decay: 0\nmax_grad_norm: null\n"))
    assert (cfg.loop.lr, cfg.loop.weight_decay, cfg.loop.max_grad_norm) == (3e-5, 0.0, None)  # YAML 1.1 reads 3e-5 as text
    assert isinstance(cfg.loop.weight_decay, float)
    supervised = StageConfig(stage="supervised", data={"type": "wiki_demo"}).to_dict()
    assert "query_max_length" in supervised and "objective" not in supervised and "min_chars" not in supervised


def test_stage_flag_and_file_must_agree(tmp_path):
    path = config_file(tmp_path, "stage: pretrain\nmax_steps: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml:1: the file is a 'pretrain' config but --stage supervised"):
        load_stage_config(path, stage="supervised")
    assert load_stage_config(path, stage="pretrain").loop.max_steps == 3


def test_pipeline_keys_are_checked_where_they_are_written(tmp_path):
    base = {"model": "m", "output_dir": str(tmp_path / "run")}
    cases = [
        ({**base, "stages": {"pretrain": {}, "unsupervised": {"objective": "nll"}}},
         r"p.yaml:\d+: stage 'unsupervised' does not read 'objective'"),
        ({**base, "temperature": 0.1, "stages": {"pretrain": {}}},
         r"p.yaml:\d+: no stage of this pipeline \(pretrain\) reads 'temperature'"),
        ({**base, "stages": {"pretrain": {"output_dir": "elsewhere"}}}, r"stage 'pretrain' sets 'output_dir'"),
        ({**base, "stages": {"pretrain": {"max_steps": "many"}}}, r"p.yaml:\d+: max_steps must be a whole number"),
    ]
    for data, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_pipeline(config_file(tmp_path, yaml.safe_dump(data), "p.yaml"))
    shared = {**base, "temperature": 0.1, "stages": {"pretrain": {}, "unsupervised": {}}}
    configs = load_pipeline(config_file(tmp_path, yaml.safe_dump(shared), "p.yaml"), ["--pretrain.lr", "1e-3"])
    assert configs[1].temperature == 0.1 and configs[0].loop.lr == 1e-3  # shared keys go to the stages that read them


def test_train_checks_the_output_folder_before_loading_anything(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(LLM2Comp, "from_pretrained", lambda *a, **k: pytest.fail("model loaded before the check"))
    (tmp_path / "taken").write_text("a file")
    cfg = tiny_stage_config(tiny_llama_dir, write_corpus(tmp_path / "c.txt"), tmp_path / "taken")
    with pytest.raises(OutputError, match="output_dir .*taken is a file, not a folder"):
        run_stage(cfg)  # before: every step trained, then all lost at the first checkpoint write
    path = config_file(tmp_path, yaml.safe_dump({**cfg.to_dict(), "output_dir": str(tmp_path / "taken" / "run")}))
    assert main(["train", "--config", str(path)]) == 2
    assert "taken on its way is a file" in capsys.readouterr().err


def test_encode_and_eval_check_their_outputs_and_suite_before_the_model_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(LLM2Comp, "from_pretrained", lambda *a, **k: pytest.fail("model loaded before the check"))
    (tmp_path / "in.txt").write_text("one text\n")
    (tmp_path / "a-folder.npy").mkdir()
    (tmp_path / "a-file").write_text("x")
    for output, message in ((tmp_path / "a-folder.npy", "a-folder.npy is a folder; give a file name"),
                            (tmp_path / "a-file" / "out.npy", "a-file on its way is a file")):
        assert main(["encode", "--input", str(tmp_path / "in.txt"), "--output", str(output)]) == 2
        assert message in capsys.readouterr().err
    (tmp_path / "suite.yaml").write_text("tasks:\n  - type: sts\n    pth: x.tsv\n")
    assert main(["eval", "--suite", str(tmp_path / "suite.yaml")]) == 2  # the suite is read first
    assert "unknown key(s) ['pth'] for type 'sts'" in capsys.readouterr().err
    assert main(["eval", "--max-items", "8", "--output", str(tmp_path / "a-file" / "eval")]) == 2
    assert "a-file on its way is a file" in capsys.readouterr().err


def test_trained_input_embeddings_survive_save_and_load(tiny_llama_dir, tmp_path):
    cfg = tiny_stage_config(tiny_llama_dir, write_corpus(tmp_path / "c.txt"), tmp_path / "run", max_steps=2,
                            train_input_embeddings=True)
    folder = run_pretrain(cfg)
    trained = load_file(str(list_checkpoints(tmp_path / "run" / "checkpoints")[-1] / "trainable.safetensors"))
    (trained_table,) = [value for name, value in trained.items() if name.endswith("embed_tokens.weight")]
    reloaded = LLM2Comp.from_pretrained(folder)
    table = reloaded.model.get_input_embeddings().weight.detach()
    base = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=0, pooling="mean", attention="causal")
    assert (base.model.get_input_embeddings().weight - trained_table).abs().max() > 1e-4  # training changed them
    torch.testing.assert_close(table, trained_table, atol=0, rtol=0)  # before: the backbone's, untrained
    reloaded.save(tmp_path / "again")  # the next stage's save keeps them too
    again = LLM2Comp.from_pretrained(tmp_path / "again").model.get_input_embeddings().weight
    torch.testing.assert_close(again.detach(), trained_table, atol=0, rtol=0)


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    path = config_file(tmp_path, "stage: pretrain\nlr: 1.0e-4\nmax_steps: 5\nlr: 3.0e-4\n")
    with pytest.raises(ConfigError, match=r"c.yaml:4: key 'lr' is given twice \(first at line 2\)"):
        load_stage_config(path)  # before: accepted, the last value won
    nested = {"model": "m", "stages": {"pretrain": {"max_steps": 2}}}
    text = yaml.safe_dump(nested, sort_keys=False) + "  pretrain:\n    max_steps: 3\n"
    with pytest.raises(ConfigError, match=r"p.yaml:5: key 'stages.pretrain' is given twice \(first at line 3\)"):
        load_pipeline(config_file(tmp_path, text, "p.yaml"))


@pytest.mark.parametrize("text, override, message", [
    ("lr: .inf\n", [], r"c.yaml:1: lr must be a finite number, got inf"),
    ("weight_decay: .nan\n", [], r"c.yaml:1: weight_decay must be a finite number, got nan"),
    ("max_grad_norm: -.inf\n", [], r"max_grad_norm must be a finite number"),
    ("lora: {r: 4, alpha: .inf}\n", [], r"c.yaml:1: lora.alpha must be a finite number, got inf"),
    ("", ["--lr", "inf"], r"--lr \(command line\): lr must be a finite number, got inf"),
    ("", ["--margin", "nan"], r"--margin \(command line\): margin must be a finite number, got nan"),
])
def test_non_finite_numbers_are_refused(tmp_path, text, override, message):
    with pytest.raises(ConfigError, match=message):  # before: `lr: .inf` passed every check
        load_stage_config(config_file(tmp_path, text or "stage: pretrain\n"), override)


def test_train_needs_a_config_and_says_so(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["train"])  # before: the 7B-sized default (32,000 steps) started into ./runs/pretrain
    assert stopped.value.code == 2 and "--config" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "required: there is no default run" in " ".join(capsys.readouterr().out.split())


def test_train_passes_trust_remote_code_to_the_model_loads(tiny_llama_dir, tmp_path, monkeypatch):
    from llm2comp.models import backbone

    class Stop(Exception):
        pass

    seen = []
    real_tokenizer = backbone.load_tokenizer

    def tokenizer(*args, trust_remote_code=False, **kwargs):
        seen.append(("tokenizer", trust_remote_code))
        return real_tokenizer(*args, **kwargs)

    def model(*args, trust_remote_code=False, **kwargs):
        seen.append(("model", trust_remote_code))
        raise Stop

    monkeypatch.setattr(backbone, "load_tokenizer", tokenizer)
    monkeypatch.setattr(LLM2Comp, "from_pretrained", model)
    cfg = tiny_stage_config(tiny_llama_dir, write_corpus(tmp_path / "c.txt"), tmp_path / "run")
    path = config_file(tmp_path, yaml.safe_dump(cfg.to_dict()))
    for flag in ([], ["--trust-remote-code"]):  # before: no such option
        with pytest.raises(Stop):
            main(["train", "--config", str(path), *flag])
        assert seen == [("tokenizer", bool(flag)), ("model", bool(flag))]
        seen.clear()


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_an_empty_config_file_is_refused_not_run_with_the_large_defaults(tmp_path, text):
    # before: resolved to the 32,000-step default, as `train` without --config once did
    with pytest.raises(ConfigError, match=r"c.yaml: the file holds no settings"):
        load_stage_config(config_file(tmp_path, text))
