"""MLflow: the runs a pipeline execution logs (`runs`), a sweep's parent run and summary
(`sweep`), the logged models' code (`tflite_pyfunc`) and the tracking server (`server`)."""
