"""Using a trained model: evaluate it, export it for serving and phones, classify images with it.

    yolol_tf.inference.evaluate.evaluate(model, data, split)   every multi-label figure on one split
    yolol_tf.inference.export.export(model, format, ...)       SavedModel, TFLite or ONNX, checked against Keras
    yolol_tf.inference.predict.predict(model, paths, ...)      classify images or their boxes
    yolol_tf.inference.runners.load_runner(model)              any model format: pixels in, probabilities out
    yolol_tf.inference.loading                                 a .keras model with its labels; its run's data

The functions are reached through their modules (``from yolol_tf.inference.export import export``): a
package attribute named like a submodule would be the module or the function depending on import order.
"""
