// Train LoRA tab, the sections' jobs (dataset check/import/preprocess, tagging, tools, grid): a task id
// for each start, a timer that clicks the section's hidden poll button while its job is queued or
// running, and - inside the WebUI, for jobs that wait for its queue - the WebUI's own progress bar
// (requestProgress) on that task id. Training runs are polled by train_lora.js.
(function () {
    const ACTIVE = ["queued", "running"];
    // [job state box, poll button, WebUI task id box, progress bar container]
    const JOBS = [
        ["train_lora_data_state", "train_lora_data_poll", "train_lora_data_webui_task", "train_lora_data_progressbar"],
        ["train_lora_tagjob_state", "train_lora_tagjob_poll", "train_lora_tagjob_webui_task",
            "train_lora_tagjob_progressbar"],
        ["train_lora_tools_state", "train_lora_tools_poll", "train_lora_tools_webui_task",
            "train_lora_tools_progressbar"],
        ["train_lora_grid_state", "train_lora_grid_poll", "train_lora_grid_webui_task", "train_lora_grid_progressbar"],
    ];
    const PERIOD_MS = 1000;
    const barsShown = new Set();

    // root(), valueOf() and taskId() are train_lora.js's, read at call time (script order does not matter)
    const root = () => window.trainLoraDom.root();
    const valueOf = (id) => window.trainLoraDom.valueOf(id);

    function tick() {
        for (const [stateId, pollId, taskBoxId, barId] of JOBS) {
            if (!ACTIVE.includes(valueOf(stateId))) continue;
            const button = root().querySelector("#" + pollId);
            if (button) button.click();
            const task = valueOf(taskBoxId);
            const bar = root().querySelector("#" + barId);
            if (task && bar && !barsShown.has(task) && typeof requestProgress === "function") {
                barsShown.add(task);
                requestProgress(task, bar, null, function () {});
            }
        }
    }

    // Gradio calls this with a start button's inputs; the first (a hidden box) gets a fresh task id.
    window.trainLoraJobStart = function (...args) {
        args[0] = window.trainLoraDom.taskId();
        return args;
    };

    if (!window.trainLoraJobPolling) {
        window.trainLoraJobPolling = setInterval(tick, PERIOD_MS);
    }
})();
