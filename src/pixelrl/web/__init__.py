"""The labelling page: ``pixelrl label QUEUE`` serves a label queue (:mod:`pixelrl.rewards.queue`) as a local web
page showing two clips side by side, with keys for left / right / equal / skip (:mod:`pixelrl.web.label_server`)."""
