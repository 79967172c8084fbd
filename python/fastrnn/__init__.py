"""fastrnn"""
