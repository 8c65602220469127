"""`train_and_evaluate(config, workdir)`: data, model, `fit`, saving, test summary.

Everything `train.py` does, importable and testable without flags. The run's
files (DESIGN.md section 1) go into `workdir`, each written atomically
(`keras_vae.files`):

    config.json                 the resolved config
    model.keras                 the latest model (each epoch and at the end)
    history.json                per-epoch logs of `fit` (kept across resumes)
    backup/                     resume state: weights + optimizer + RNG + step
    tensorboard/{train,validation}  scalars (the model's log keys: loss,
                                reconstruction, kl, elbo, beta, skipped_steps and
                                a variant's own) as `epoch_<key>`, and in train
                                `step/<key>` every `log_every_steps`; validation
                                also the image grids of `LatentSummaries` and the
                                Projector's embedding; tensorboard/ itself the
                                HParams session (config, `test/...` metrics)
    export/                     the SavedModel (`keras_vae.export`)
    train_summary.json          test metrics; its presence marks a finished run

A run killed at any point and started again with the same arguments resumes
from its last backup: the model, optimizer and random state are restored and
the (deterministic) input stream skips the batches already used, so it ends
with the same number of epochs and steps as an uninterrupted run, and with
`deterministic=True` the same weights. SIGTERM and Ctrl-C write a backup
first (`callbacks.PreemptionGuard`); a run whose weights turn non-finite
stops before saving them (`callbacks.NonFiniteGuard`, `checkpoint`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import signal

import keras
import tensorflow as tf
from absl import logging

from keras_vae import data, evaluation, files, models, sequence_evaluation
from keras_vae.callbacks import (
    Diverged,
    LatentSummaries,
    NonFiniteGuard,
    Preempted,
    PreemptionGuard,
    SequenceSummaries,
    StepScalars,
    final_metrics,
    step_of,
    write_final_metrics,
    write_held_out_projector,
    write_hparams,
)
from keras_vae.config import (
    OPERATIONAL_FIELDS,
    Config,
    Interrupted,
    UsageError,
    UserError,
    validate,
)
from keras_vae.training.checkpoint import (
    BACKUP_DIR,
    SUMMARY_FILE,
    AtomicModelSaver,
    Backup,
    EpochHistory,
    backup_step,
    check_workdir,
    clear_run,
    read_history,
    restore_backup,
    save_model_atomic,
    write_or_explain,
)
from keras_vae.training.distribute import (
    Runtime,
    distributed_evaluate,
    distributed_fit,
    make_runtime,
)
from keras_vae.training.execution import (
    ClampedProgbar,
    StepsPerCall,
    acts_on_batches,
    run_schedule,
)
from keras_vae.training.failures import check_finite_results, diverged_error
from keras_vae.training.plan import (
    build_model,
    check_memory,
    load_split,
    phases,
    steps_for,
    validation_steps_for,
)

__all__ = [
    "BACKUP_DIR",
    "SUMMARY_FILE",
    "Runtime",
    "build_model",
    "check_memory",
    "check_workdir",
    "load_split",
    "make_runtime",
    "phases",
    "restore_backup",
    "save_model_atomic",
    "summary_line",
    "train_and_evaluate",
    "validation_steps_for",
]


def train_and_evaluate(config: Config, workdir: str, verbose="auto", restart=False, callbacks=()):
    """Trains the model of `config` in `workdir` (resuming it), evaluates it on the test split.

    Args:
        config: a resolved `Config` (see `keras_vae.config.resolve`).
        workdir: the run's folder; created if missing.
        verbose: passed to `fit`/`evaluate` (progress bars).
        restart: start over even if `workdir` holds a run (finished or not).
        callbacks: more Keras callbacks, run on every worker.

    Returns:
        dict with the test metrics in nats per example (`elbo`,
        `reconstruction`, `kl`, `bits_per_dim`; for a model that bounds no
        likelihood, the autoencoder, `reconstruction`,
        `reconstruction_per_dim` and a `note` instead), `num_images`,
        `steps`, `skipped_steps`, `resumed_from_step` and `workdir`.

    Raises:
        UsageError: bad config, a finished workdir, a config that disagrees
            with the workdir's; UserError: missing data, an unwritable
            workdir or full disk, a model too large for memory, a run that
            diverged or produced non-finite test metrics; Interrupted:
            SIGTERM or Ctrl-C (after a backup).
    """
    with PreemptionGuard() as preemption:
        try:
            run = _Run(config, workdir, verbose, restart, preemption)
            run.start()
            run.train(callbacks)
            return run.finish()
        except Preempted as e:
            step = backup_step(os.path.join(workdir, BACKUP_DIR))
            kept = "nothing" if step is None else f"the run up to step {step}"
            raise Interrupted(
                f"Stopped by {signal.Signals(e.signum).name}; {kept} is saved in {workdir}: "
                "rerun the same command to resume.",
                e.signum,
            ) from None


@dataclasses.dataclass
class _Run:
    """One call of `train_and_evaluate`, in its three acts: `start` (checks,
    data, model, resume state, the workdir), `train` (the `fit` phases) and
    `finish` (test metrics, export, the finished marker)."""

    config: Config
    workdir: str
    verbose: object
    restart: bool
    preemption: PreemptionGuard

    def path(self, name):
        return os.path.join(self.workdir, name)

    def start(self):
        config, workdir = self.config, self.workdir
        validate(config)
        if config.model not in models.MODELS:  # the registry, variants added at run time too
            raise UsageError(
                f"--model must be one of {', '.join(models.MODELS)}. Received: {config.model!r}."
            )
        self.runtime = make_runtime(config)  # first: a multi-worker strategy needs it
        saved = check_workdir(config, workdir, self.restart)
        # Read before anything is written: a corrupt file stops the run here.
        previous = read_history(self.path("history.json")) if saved is not None else None
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(config.seed)
        # Data and model before anything is written: a missing dataset or a
        # model that cannot be built must not leave a config.json behind.
        self._load_data()
        check_memory(config, self.image_shape)
        start_step = self._build_model(saved)
        if self.runtime.is_chief:
            self._prepare_workdir()
        if start_step is not None:
            logging.info(
                "Resuming %s from step %d (epoch %d, step %d of %d).",
                workdir, start_step, start_step // self.steps_per_epoch + 1,
                start_step % self.steps_per_epoch, self.steps_per_epoch,
            )
            # History of the epochs before the one the run resumes in.
            epochs_done = start_step // self.steps_per_epoch
            self.previous = {k: v[:epochs_done] for k, v in previous.items()}
        else:
            self.previous = None
        self.start_step = start_step or 0
        logging.info(
            "Training on %s: %d train / %d validation examples of shape %s, "
            "%d epochs of %d steps, batch %d; model %s, distribution %s (%d replicas, %s), "
            "policy %s, XLA %s.",
            config.dataset, self.train_info.num_examples, self.val_info.num_examples,
            self.image_shape, config.epochs, self.steps_per_epoch, config.batch_size,
            config.model, self.runtime.kind, self.runtime.strategy.num_replicas_in_sync,
            "chief" if self.runtime.is_chief else "worker", self.runtime.policy,
            "on" if self.runtime.jit_compile else "off",
        )

    def _train_stream(self):
        return load_split(self.config, "train", shuffle=True, repeat=True, drop_remainder=True)

    def _load_data(self):
        config, custom_loop = self.config, self.runtime.custom_loop
        # The distributed loop splits each global batch over the replicas:
        # only whole batches there.
        self.train_ds, self.train_info = self._train_stream()
        self.val_ds, self.val_info = load_split(
            config, "validation", shuffle=False, repeat=False, drop_remainder=custom_loop
        )
        self.image_shape = tuple(self.train_info.image_shape)
        self.steps_per_epoch = steps_for(
            config.steps_per_epoch, self.train_info.num_examples, config.batch_size, "train"
        )
        self.validation_steps = validation_steps_for(
            config.validation_steps, self.val_info.num_examples, config.batch_size, custom_loop
        )

    def _summary_batch(self):
        """`(images, condition)` of the image grids: the first (up to) 64
        validation images `(N, H, W, C)` and a cvae's labels of them (else None)."""
        batch = next(iter(self.val_ds.unbatch().batch(64)))
        if self.config.condition is None:
            return batch.numpy(), None
        return batch[0].numpy(), batch[1].numpy()

    def _write_projector(self):
        """The Projector's embedding of the first 1,024 validation images
        (those of `_summary_batch` first) with their labels."""
        config, labelled = self.config, bool(self.val_info.label_names)
        ds, _ = data.load_for_config(
            config, "validation", shuffle=False, repeat=False, with_labels=labelled
        )
        log_dir = self.path(os.path.join("tensorboard", "validation"))
        write_held_out_projector(self.model, log_dir, ds, config.dataset, config.condition)

    def _build_model(self, saved):
        """Builds the model (and restores the backup when resuming).

        Returns:
            The step the backup was taken at, or None (a new run, or none yet).
        """
        config, runtime = self.config, self.runtime
        with runtime.strategy.scope():
            self.model = build_model(
                config, self.image_shape, self.steps_per_epoch, runtime.jit_compile,
                dataset_size=self.train_info.num_examples, vocabulary=self.train_info.vocabulary,
            )
            if not self.model.optimizer.built:  # LossScaleOptimizer.build is not idempotent
                self.model.optimizer.build(self.model.trainable_variables)
            if saved is None:
                return None
            if runtime.is_chief:
                files.recover_all(self.workdir)  # leftovers of saves a kill interrupted
            # Every worker restores the chief's backup (shared storage).
            start_step = restore_backup(self.model, self.path(BACKUP_DIR))
            if start_step is None:
                logging.warning("%s has no backup yet: training from step 0.", self.workdir)
            # The backup holds the optimizer's learning rate; the flags' wins.
            self.model.optimizer.learning_rate = config.learning_rate
        for name in sorted(OPERATIONAL_FIELDS):
            if getattr(saved, name) != getattr(config, name):
                logging.warning(
                    "Resuming with %s=%r (config.json had %r).",
                    name, getattr(config, name), getattr(saved, name),
                )
        return start_step

    def _prepare_workdir(self):
        try:
            os.makedirs(self.workdir, exist_ok=True)
            if self.restart:
                clear_run(self.workdir)
            files.recover_all(self.workdir)
        except OSError as e:
            raise UserError(
                f"Cannot write to --workdir={self.workdir} ({e.strerror}): "
                "choose a folder you can write to."
            ) from e
        config_path = self.path("config.json")
        write_or_explain(config_path, lambda: files.atomic_write_text(
            config_path, self.config.to_json()))

    def _callbacks(self, extra):
        config, runtime = self.config, self.runtime
        backup = Backup(self.path(BACKUP_DIR), config.backup_every_steps, self.steps_per_epoch)
        self.preemption.backup = backup if runtime.is_chief else None
        # Only the chief writes; every worker runs the guard (they skip the
        # same steps, the gradients being all-reduced) and the caller's
        # callbacks. The guard comes first (it acts before anything is
        # saved), the preemption handler after the backup (an epoch's end
        # saves first).
        summary_images, summary_condition = self._summary_batch()
        tensorboard = self.path("tensorboard")
        if runtime.is_chief:  # the HParams session: the config and the metric list
            write_hparams(tensorboard, config)
        # About 100 points per run unless asked (48 steps apart on shapes), a
        # multiple of the steps per train-function call (`_fit_phase`).
        # Several steps per call of the train function (`execution`); a
        # caller's callback with a batch hook gets every step, as in `fit`.
        calls, every = run_schedule(
            config, self.steps_per_epoch, limit=1 if acts_on_batches(extra) else None
        )
        self.steps_per_call = StepsPerCall(calls)
        chief = [
            keras.callbacks.TensorBoard(log_dir=tensorboard, write_graph=False, profile_batch=0),
            StepScalars(os.path.join(tensorboard, "train"), every, exact=not runtime.custom_loop),
            EpochHistory(self.path("history.json"), self.previous),
            AtomicModelSaver(self.path("model.keras")),
            backup,
            # Image grids next to the validation scalars, on the first (up to)
            # 64 validation images: fixed, as the split is not shuffled.
            self._summaries(summary_images, summary_condition),
        ]
        return [
            self.steps_per_call,
            NonFiniteGuard(config.max_consecutive_skips),
            *(chief if runtime.is_chief else []),
            self.preemption,
            *([ClampedProgbar()] if self.verbose else []),
            *extra,
        ]

    def _summaries(self, examples, condition):
        config, log_dir = self.config, self.path(os.path.join("tensorboard", "validation"))
        if config.is_sequence:
            return SequenceSummaries(log_dir, examples, every=config.image_every, seed=config.seed)
        return LatentSummaries(
            log_dir, examples, condition=condition, every=config.image_every, seed=config.seed
        )

    def train(self, extra_callbacks=()):
        config, model, runtime = self.config, self.model, self.runtime
        callbacks = self._callbacks(extra_callbacks)
        train_ds = self.train_ds
        try:
            for phase, (initial_epoch, epochs, steps) in enumerate(
                phases(self.start_step, self.steps_per_epoch, config.epochs)
            ):
                # A freshly built input pipeline replays the seeded stream from
                # its start (its shuffle's seed generator is new): skipping the
                # batches already trained on continues it exactly. Rebuilt for
                # a second phase, as the first one's generator has moved on.
                if phase:
                    train_ds, _ = self._train_stream()
                stream = train_ds.skip(step_of(model))
                fit_args = dict(
                    initial_epoch=initial_epoch, epochs=epochs, callbacks=callbacks,
                    validation_steps=self.validation_steps, verbose=self.verbose,
                )
                if runtime.custom_loop:
                    distributed_fit(
                        model, runtime.strategy, stream, self.val_ds, steps=steps, **fit_args
                    )
                else:
                    self.steps_per_call.install(model)
                    # Exactly the validation batches asked for, whole calls or not.
                    val_ds = self.val_ds.take(self.validation_steps)
                    # shuffle=False: the tf.data pipeline shuffles (seeded).
                    model.fit(stream, steps_per_epoch=steps, validation_data=val_ds,
                              shuffle=False, **fit_args)
            if runtime.is_chief:
                save_model_atomic(model, self.path("model.keras"))
                self._write_projector()
        except Diverged as e:
            raise diverged_error(e, config, self.workdir) from None
        steps, skipped = step_of(model), int(keras.ops.convert_to_numpy(model.skipped_steps))
        if steps and skipped >= steps:
            raise UserError(
                f"All {steps} training steps were skipped (non-finite loss or gradient): "
                "nothing was learned. Check the data and settings, then pass --restart."
            )

    def finish(self):
        config, model, runtime = self.config, self.model, self.runtime
        custom_loop = runtime.custom_loop
        test_ds, test_info = load_split(
            config, "test", shuffle=False, repeat=False, drop_remainder=custom_loop
        )
        # A density on [0, 1] pixels: dequantized images, for 8-bit bits/dim.
        dequantize = model.bounds_likelihood and config.likelihood in evaluation.DENSITY_LIKELIHOODS

        def dequantized(i, batch):  # x + u / 255, u ~ U(-1/2, 1/2), as `evaluation.dequantized`
            x, *rest = batch if isinstance(batch, tuple) else (batch,)
            seed = tf.stack([tf.constant(config.seed, tf.int64), i])
            x += tf.random.stateless_uniform(tf.shape(x), seed, -0.5, 0.5) / 255.0
            return (x, *rest) if rest else x

        test_ds = test_ds.enumerate().map(dequantized) if dequantize else test_ds
        batches = (
            test_info.num_examples // config.batch_size
            if custom_loop
            else math.ceil(test_info.num_examples / config.batch_size)
        )
        eval_steps = batches if config.eval_steps is None else min(config.eval_steps, batches)
        if custom_loop:
            metrics = distributed_evaluate(model, runtime.strategy, test_ds, eval_steps)
        else:
            metrics = model.evaluate(  # take: whole calls of the test function or not
                test_ds.take(eval_steps), steps=eval_steps, return_dict=True,
                verbose=self.verbose, callbacks=[ClampedProgbar()] if self.verbose else None,
            )
        results = {"workdir": self.workdir} | evaluation.summarize_test(
            metrics, self.image_shape, bounds_likelihood=model.bounds_likelihood,
            dequantized=dequantize,
        )
        results.update({
            "num_images": int(min(test_info.num_examples, eval_steps * config.batch_size)),
            "steps": step_of(model),
            "skipped_steps": int(keras.ops.convert_to_numpy(model.skipped_steps)),
            "resumed_from_step": self.start_step or None,
            "replicas": runtime.strategy.num_replicas_in_sync,
        })
        if config.condition is not None:  # the bound is on log p(x|y)
            results["conditioned_on"] = config.condition
        if model.is_sequence:  # per token, not per pixel
            results = sequence_evaluation.test_summary(results, test_ds, eval_steps)
        check_finite_results(results)
        if not runtime.is_chief:
            return results
        # The HParams dashboard's test metrics (`write_hparams` lists them).
        write_final_metrics(self.path("tensorboard"), final_metrics(results), results["steps"])
        if config.export:
            from keras_vae import export as export_lib

            export_dir = self.path("export")
            write_or_explain(export_dir, lambda: export_lib.export_saved_model(model, export_dir))
        # The finished marker; then the resume state is no longer needed.
        summary = self.path(SUMMARY_FILE)
        write_or_explain(summary, lambda: files.write_json(summary, results))
        shutil.rmtree(self.path(BACKUP_DIR), ignore_errors=True)
        return results


def summary_line(results):
    """The one-line summary `train.py` ends with: the test ELBO (a density's
    bits/dim: of 8-bit data, `evaluation.DEQUANTIZED_NOTE`), or for a model
    that bounds no likelihood (no `elbo` in `results`) the reconstruction."""
    if "elbo_per_token" in results:
        return sequence_evaluation.summary_line(results)
    if "elbo" not in results:
        return (
            f"Test reconstruction {results['reconstruction']:.2f} nats/image "
            f"({results['reconstruction_per_dim']:.5f} nats/dim at z = the encoder's mean; "
            "no ELBO or bits/dim: the model defines no p(x)) "
            f"on {results['num_images']} test images. Run saved in {results['workdir']}"
        )
    given = f" given {results['conditioned_on']}" if results.get("conditioned_on") else ""
    bits = f"{results['bits_per_dim']:.4f} bits/dim"
    if results.get("dequantized"):
        bits += " of the 8-bit pixels, an upper bound from dequantized images"
    return (
        f"Test ELBO{given} {results['elbo']:.2f} nats/image "
        f"({bits}; reconstruction {results['reconstruction']:.2f}, KL {results['kl']:.2f}) "
        f"on {results['num_images']} test images. Run saved in {results['workdir']}"
    )
