"""MLflow: the runs a pipeline execution logs (`runs`), the store (`store`), the logged
models (`models`) and their code (`tflite_pyfunc`), a sweep's parent run and summary
(`sweep`), and the tracking server (`server`)."""
