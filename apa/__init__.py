"""apa: automatic pronunciation assessment with a fine-tuned audio language model.

One concern per module: `audio` (loading, checks), `text` (normalisation, G2P, IPA),
`schema` (result dataclasses), `data` (Speechocean762 readers), `prompts` (rubric prompt,
SFT target, decoding template), `parsing` (model text -> schema), `metrics` (PCC/SCC/RMSE),
`mini` (offline assembly of apa-mini), `config` (paths, environment, model and device choice),
`decoding` (constrained decoding of the scores), `scorer` (the scorer and its loading; `model`
re-exports it for older imports), `render` (HTML and plots for the app).
"""

__version__ = "0.1.0"
